"""Multipart uploads of face photos, with a bound on every cost before it is paid.

Order of refusals, cheapest first: the whole body (Content-Length, and a running count
for chunked bodies, `BodyLimit`), the content type, the number of parts, each part's
declared type and byte size, then the image header (pixel count: a decompression bomb
is refused from its first bytes, `facescreen.ingest.images`), and only then decoding.
Each refusal names the part and the bound. Image bytes never reach a log or an error
message; file names do, cleaned of control characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facescreen.api.context import ApiLimits
from facescreen.api.errors import RequestTooLarge
from facescreen.core.types import ImageBGR
from facescreen.ingest.images import ImageError, decode_image

IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/x-ms-bmp", "image/webp")
MAX_TEXT_BYTES = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, declared or counted."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Upload:
    """A parsed multipart request: its text fields and its image parts (not decoded yet,
    so the fields can be checked before the decoding is paid for)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self.fields.get(name)
        if value is None or not value.strip():
            if required:
                raise HTTPException(400, f"field {name!r} is required and must not be blank")
            return None
        return value

    async def images(self, limits: ApiLimits) -> list[tuple[str, ImageBGR]]:
        """Decode every part (header checked first: pixel bound before any decoding)."""
        out = []
        for label, data in self.files:
            try:
                image = await run_in_threadpool(decode_image, data,
                                                max_pixels=limits.max_pixels, name=label)
            except ImageError as exc:
                raise HTTPException(400, str(exc)) from None
            out.append((label, image))
        return out


async def read_upload(request: Request, limits: ApiLimits, *, text: set[str],
                      files: str, max_files: int) -> Upload:
    """Parse and check a multipart body with text fields `text` and image parts `files`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise HTTPException(415, f"send multipart/form-data, not {kind[:60] or 'no content type'}")
    try:
        form = await request.form(max_files=max_files, max_fields=len(text) + 4,
                                  max_part_size=MAX_TEXT_BYTES)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            detail = f"too many images: at most {max_files} per request"
        raise HTTPException(400, f"multipart body refused: {detail}") from None
    try:
        if not form.multi_items():
            raise HTTPException(400, "empty multipart body: expected the fields "
                                     f"{', '.join(sorted(text | {files}))}")
        return Upload(fields=_text_fields(form, text, files),
                      files=await _parts(form.getlist(files), files, limits, max_files))
    finally:
        await form.close()


def _text_fields(form: FormData, text: set[str], files: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in form.multi_items():
        if name == files:
            continue
        if name not in text:
            raise HTTPException(400, f"unknown field {clean_label(name)!r} (expected "
                                     f"{', '.join(sorted(text | {files}))})")
        if not isinstance(value, str):
            raise HTTPException(400, f"field {name!r} must be text, not a file")
        if name in out:
            raise HTTPException(400, f"field {name!r} given twice")
        out[name] = value
    return out


async def _parts(parts: list[UploadFile | str], name: str, limits: ApiLimits,
                 max_files: int) -> list[tuple[str, bytes]]:
    if not parts:
        raise HTTPException(400, f"no image: send one or more files in the field {name!r}")
    if len(parts) > max_files:
        raise HTTPException(400, f"too many images: at most {max_files} per request")
    out = []
    for n, part in enumerate(parts, 1):
        if not isinstance(part, UploadFile):
            raise HTTPException(400, f"field {name!r} part {n} is text, not an image file")
        label = clean_label(part.filename or "") or f"image-{n}"
        kind = (part.content_type or "").split(";")[0].strip().lower()
        if kind not in IMAGE_TYPES:
            raise HTTPException(415, f"{label}: content type {kind[:60] or 'none'!r} is not an "
                                     "image type (image/jpeg, image/png, image/bmp, image/webp)")
        if part.size is not None and part.size > limits.max_image_bytes:
            raise HTTPException(413, f"{label}: {part.size:,} bytes, over the limit of "
                                     f"{limits.max_image_bytes:,} per image")
        data = await part.read(limits.max_image_bytes + 1)
        if len(data) > limits.max_image_bytes:
            raise HTTPException(413, f"{label}: over the limit of {limits.max_image_bytes:,} "
                                     "bytes per image")
        if not data:
            raise HTTPException(400, f"{label}: empty file")
        out.append((label, data))
    return out


def clean_label(name: str) -> str:
    """A file name fit for listings, audit lines and messages: base name, no control
    characters, at most 120 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _CONTROL.sub("?", base)[:120].strip()
