"""Uploaded files (`POST /v1/files`, as the replicate client sends them by default), kept on disk
for an hour. A prediction input that names one (`.../v1/files/<id>`, on whatever host the caller
reached us through) is read from here: it is never fetched over the network."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from inference.errors import BadRequest, InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from inference.predictions import new_id

FILE_URL = re.compile(r"https?://[^/]+(?:/[^?#]*)?/v1/files/([a-z0-9]{26})")


@dataclass
class Upload:
    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    expires_at: float = 0.0  # monotonic

    def to_json(self, base_url: str, ttl_s: float) -> dict[str, Any]:
        iso = self.created.isoformat().replace("+00:00", "Z")
        expires = (self.created + timedelta(seconds=ttl_s)).isoformat().replace("+00:00", "Z")
        return {
            "id": self.id, "name": self.name, "content_type": self.content_type, "size": self.size,
            "etag": self.sha256[:32], "checksums": {"sha256": self.sha256}, "metadata": self.metadata,
            "created_at": iso, "expires_at": expires,
            "urls": {"get": f"{base_url.rstrip('/')}/v1/files/{self.id}"},
        }


class Uploads:
    def __init__(self, *, max_bytes: int, ttl_s: float = 3600.0, max_files: int = 1000) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._max_files = max_files
        self._dir = Path(tempfile.mkdtemp(prefix="modelfolio-uploads-"))
        self._files: dict[str, Upload] = {}

    async def receive(self, request: Request) -> Upload:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise UnsupportedMediaType(f"upload files as multipart/form-data, not {content_type or 'nothing'}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(f"the upload is {int(declared) / 1e6:.1f} MB; the limit is "
                                  f"{self.max_bytes / 1e6:.0f} MB")
        self._expire()
        if len(self._files) >= self._max_files:
            raise BadRequest("too many uploaded files are held right now; retry in a few minutes")
        async with request.form(max_files=1, max_fields=10) as form:
            content = form.get("content")
            if not isinstance(content, UploadFile):
                raise InvalidInput("the upload needs a file in the form field 'content'")
            upload = Upload(id=new_id(), name=content.filename or "upload",
                            content_type=content.content_type or "application/octet-stream",
                            size=0, sha256="", path=self._dir / new_id(),
                            metadata=_metadata(form.get("metadata")), expires_at=time.monotonic() + self.ttl_s)
            digest = hashlib.sha256()
            with upload.path.open("wb") as out:
                while chunk := await content.read(1 << 20):
                    upload.size += len(chunk)
                    if upload.size > self.max_bytes:
                        out.close()
                        upload.path.unlink(missing_ok=True)
                        raise PayloadTooLarge(f"the upload is over the {self.max_bytes / 1e6:.0f} MB limit")
                    digest.update(chunk)
                    out.write(chunk)
            upload.sha256 = digest.hexdigest()
        self._files[upload.id] = upload
        return upload

    def get(self, file_id: str) -> Upload:
        self._expire()
        if file_id not in self._files:
            raise NotFound(f"no file {file_id!r} (uploads are kept for an hour)")
        return self._files[file_id]

    def delete(self, file_id: str) -> None:
        self.get(file_id).path.unlink(missing_ok=True)
        del self._files[file_id]

    def read_url(self, url: str) -> tuple[str, bytes] | None:
        """The bytes of an uploaded file named by URL, or None if the URL names no upload."""
        match = FILE_URL.fullmatch(url)
        if match is None:
            return None
        upload = self.get(match.group(1))
        return upload.content_type, upload.path.read_bytes()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for upload in [u for u in self._files.values() if u.expires_at < now]:
            upload.path.unlink(missing_ok=True)
            del self._files[upload.id]


def _metadata(raw: Any) -> dict[str, Any]:
    import json

    if raw is None:
        return {}
    try:
        value = json.loads(raw if isinstance(raw, str) else "")
    except json.JSONDecodeError:
        raise InvalidInput("the form field 'metadata' must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput("the form field 'metadata' must be a JSON object")
    return value
