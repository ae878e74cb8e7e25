"""The plain baseline: one decode and one forward per request, on the event loop, no batching.

    python -m benchmarks.naive_server --model resnet18 --port 8010 [--threads 2]

Takes the request our server takes (`POST /v1/models/{owner}/{name}/predictions` with
`{"input": {"image": <data URL>}}`) and answers Replicate's shape, so one client drives both.
"""

from __future__ import annotations

import argparse
import base64
import io

import PIL.Image
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks import resnet


def create_app(model: torch.nn.Module) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        payload = body["input"]["image"].partition(",")[2]
        image = PIL.Image.open(io.BytesIO(base64.b64decode(payload)))
        output = resnet.classify(model, [image])[0]
        return JSONResponse({"status": "succeeded", "output": output}, status_code=201)

    return Starlette(routes=[Route("/v1/models/{owner}/{name}/predictions", predict, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    uvicorn.run(
        create_app(resnet.build(args.model)),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
