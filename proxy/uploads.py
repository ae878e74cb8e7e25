"""`POST /v1/files` and `GET|DELETE /v1/files/{id}`: a customer's uploads stream through to the
model server, which keeps them for an hour; an upload's URL can then be a prediction's input.
Only its uploader may read or delete it. Visitors on the demo send images as data URLs instead."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy import records
from proxy.errors import BadGateway, BadRequest, NotFound, Unauthorized, UnsupportedMediaType
from proxy.forward import hide_upstream, limited, segment
from proxy.gateway import gateway_of, origin
from proxy.requests import check_declared_length


async def upload_file(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    if caller.kind == "anonymous":
        raise Unauthorized("uploading files needs an API key; the free demo takes images as data URLs")
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType("upload a file as multipart/form-data with the field 'content'")
    check_declared_length(request.headers.get("content-length"), gateway.config.max_upload_bytes)
    body = limited(request.stream(), gateway.config.max_upload_bytes)
    try:
        reply = await gateway.upstream.send("POST", "/v1/files", headers=request.headers, body=body)
    except ClientDisconnect:
        raise BadRequest("the upload ended before it was complete") from None
    if not reply.ok:
        return reply.passthrough()
    file_object = reply.json()
    if not isinstance(file_object, dict) or not isinstance(file_object.get("id"), str):
        raise BadGateway("the model server answered an upload without a file id")
    checksums = file_object.get("checksums")
    sha256 = checksums.get("sha256") if isinstance(checksums, dict) else None
    await to_thread.run_sync(
        gateway.ledger.record_upload,
        segment(file_object["id"], "file"),
        caller.id,
        gateway.now(),
        sha256 if isinstance(sha256, str) else None,
    )
    await records.remember_upload(gateway, file_object)
    return JSONResponse(
        hide_upstream(file_object, gateway.config.upstream_url, origin(request)), status_code=201
    )


async def own_file(request: Request) -> Response:
    gateway = gateway_of(request)
    caller = await gateway.identify(request)
    file_id = segment(request.path_params["id"], "file")
    if await to_thread.run_sync(gateway.ledger.uploader_of, file_id) != caller.id:
        raise NotFound("file not found")
    reply = await gateway.upstream.send(request.method, f"/v1/files/{file_id}")
    if request.method == "DELETE" and reply.status in (204, 404):
        await records.forget_upload(gateway, file_id)
    if not reply.ok or reply.status == 204:
        return reply.passthrough()
    return JSONResponse(hide_upstream(reply.json(), gateway.config.upstream_url, origin(request)))


ROUTES = [
    Route("/v1/files", upload_file, methods=["POST"]),
    Route("/v1/files/{id}", own_file, methods=["GET", "DELETE"]),
]
