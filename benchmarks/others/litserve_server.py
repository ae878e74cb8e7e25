"""The same model under LitServe, with its own dynamic batching.

python -m benchmarks.others.litserve_server --model resnet18 --port 8030 \
    [--batch 8] [--timeout 0.01] [--workers 1]
"""

from __future__ import annotations

import argparse
import base64
import io

import litserve as ls
import PIL.Image
import torch

from benchmarks import resnet


class ResNetAPI(ls.LitAPI):
    def __init__(self, arch: str, threads: int, **batching: float) -> None:
        super().__init__(**batching)
        self.arch, self.threads = arch, threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)
        self.model = resnet.build(self.arch)

    def decode_request(self, request: dict) -> PIL.Image.Image:
        payload = request["input"]["image"].partition(",")[2]
        image = PIL.Image.open(io.BytesIO(base64.b64decode(payload)))
        image.load()
        return image

    def predict(self, images: list[PIL.Image.Image] | PIL.Image.Image) -> list[dict] | dict:
        if isinstance(images, list):
            return resnet.classify(self.model, images)
        return resnet.classify(self.model, [images])[0]

    def encode_response(self, output: dict) -> dict:
        return {"status": "succeeded", "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=0.01, help="batch timeout in seconds")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    api = ResNetAPI(args.model, args.threads, max_batch_size=args.batch, batch_timeout=args.timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
