"""Uploaded files (`POST /v1/files`, as the replicate client sends them by default), kept for an
hour. A prediction input that names one (`.../v1/files/<id>`, on whatever host the caller reached
us through) is read from here: it is never fetched over the network.

`Uploads` keeps them on this server's disk. Under Ray Serve, `inference.ray_records.SharedUploads`
keeps them in Ray's object store instead, so that every replica reads what any one received: the
form is read and checked here either way.
"""

from __future__ import annotations

import hashlib
import json
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
    metadata: dict[str, Any] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self, base_url: str, ttl_s: float) -> dict[str, Any]:
        iso, expires = (
            moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
            for moment in (self.created, self.created + timedelta(seconds=ttl_s))
        )
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "etag": self.sha256[:32],
            "checksums": {"sha256": self.sha256},
            "metadata": self.metadata,
            "created_at": iso,
            "expires_at": expires,
            "urls": {"get": f"{base_url.rstrip('/')}/v1/files/{self.id}"},
        }


class Uploads:
    """Uploads on this server's disk, at most `max_files` at once, each for `ttl_s` seconds."""

    def __init__(self, *, max_bytes: int, ttl_s: float = 3600.0, max_files: int = 1000) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._max_files = max_files
        self._dir = Path(tempfile.mkdtemp(prefix="modelfolio-uploads-"))
        self._files: dict[str, tuple[Upload, Path, float]] = {}  # id -> upload, file, expiry (monotonic)

    async def receive(self, request: Request) -> Upload:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise UnsupportedMediaType(
                f"upload files as multipart/form-data, not {content_type or 'nothing'}"
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise PayloadTooLarge(
                f"the upload is {int(declared) / 1e6:.1f} MB; the limit is {self.max_bytes / 1e6:.0f} MB"
            )
        if await self._count() >= self._max_files:
            raise BadRequest("too many uploaded files are held right now; retry in a few minutes")
        path = self._dir / new_id()
        # Two file parts at most: the JavaScript client sends its `metadata` JSON as a file too.
        async with request.form(max_files=2, max_fields=10) as form:
            content = form.get("content")
            if not isinstance(content, UploadFile):
                raise InvalidInput("the upload needs a file in the form field 'content'")
            upload = Upload(
                id=new_id(),
                name=content.filename or "upload",
                content_type=content.content_type or "application/octet-stream",
                size=0,
                sha256="",
                metadata=_metadata(await _text_of(form.get("metadata"))),
            )
            digest = hashlib.sha256()
            with path.open("wb") as out:
                while chunk := await content.read(1 << 20):
                    upload.size += len(chunk)
                    if upload.size > self.max_bytes:
                        out.close()
                        path.unlink(missing_ok=True)
                        raise PayloadTooLarge(f"the upload is over the {self.max_bytes / 1e6:.0f} MB limit")
                    digest.update(chunk)
                    out.write(chunk)
            upload.sha256 = digest.hexdigest()
        await self._keep(upload, path)
        return upload

    async def get(self, file_id: str) -> Upload:
        return self._entry(file_id)[0]

    async def all(self) -> list[Upload]:
        """Every file this store still keeps, in no particular order (GET /v1/files pages them).
        Under Ray Serve the directory keeps them: there this lists none (see README)."""
        self._expire()
        return [upload for upload, _, _ in self._files.values()]

    async def delete(self, file_id: str) -> None:
        _, path, _ = self._entry(file_id)
        path.unlink(missing_ok=True)
        del self._files[file_id]

    def read_url(self, url: str) -> tuple[str, bytes] | None:
        """The bytes of an uploaded file named by URL, or None if the URL names no upload. Called
        on a decode thread, never on the event loop."""
        match = FILE_URL.fullmatch(url)
        if match is None:
            return None
        upload, path, _ = self._entry(match.group(1))
        return upload.content_type, path.read_bytes()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _count(self) -> int:
        self._expire()
        return len(self._files)

    async def _keep(self, upload: Upload, path: Path) -> None:
        """Makes the received file readable by its id; `path` is this store's to keep or remove."""
        self._files[upload.id] = (upload, path, time.monotonic() + self.ttl_s)

    def _entry(self, file_id: str) -> tuple[Upload, Path, float]:
        self._expire()
        if file_id not in self._files:
            raise NotFound(gone(file_id))
        return self._files[file_id]

    def _expire(self) -> None:
        now = time.monotonic()
        for file_id in [i for i, (_, _, expires) in self._files.items() if expires < now]:
            self._files.pop(file_id)[1].unlink(missing_ok=True)


def gone(file_id: str) -> str:
    return f"no file {file_id!r} (uploads are kept for an hour)"


async def _text_of(part: Any) -> Any:
    if isinstance(part, UploadFile):
        raw = await part.read(64 * 1024 + 1)
        if len(raw) > 64 * 1024:
            raise InvalidInput("the form field 'metadata' is over 64 KiB")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise InvalidInput("the form field 'metadata' must be UTF-8 JSON") from None
    return part


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw if isinstance(raw, str) else "")
    except json.JSONDecodeError:
        raise InvalidInput("the form field 'metadata' must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput("the form field 'metadata' must be a JSON object")
    return value
