"""Uploads held in memory: a request body read up to a limit, and its multipart ``file`` field.

Starlette's own form parser spools any file over 1 MB to a temporary file on disk; a medical
image must never touch the server's disk, so the body is read (bounded) into memory and
parsed here with python-multipart's streaming parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from medlens.errors import UploadError

FIELD = "file"


@dataclass
class Part:
    """One part of a multipart body: its headers (lower-case names) and its bytes."""

    headers: dict[str, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)

    def disposition(self) -> dict[bytes, bytes]:
        """The Content-Disposition parameters (``name``, ``filename``)."""
        from python_multipart.multipart import parse_options_header

        return parse_options_header(self.headers.get("content-disposition", b""))[1]


def too_large(limit: int) -> UploadError:
    return UploadError(
        f"the upload is over the limit of {limit / 2**20:.0f} MiB",
        hint="send a smaller file (one image or volume), or start the service with a "
        "larger --max-upload-mb",
        status=413,
    )


async def read_body(
    chunks: AsyncIterator[bytes], limit: int, content_length: str | None = None
) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def parse_parts(body: bytes, content_type: str | None) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in memory."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(
            f"the request is {(kind or b'empty').decode('latin-1')}, not multipart/form-data",
            hint=f"send the image as the multipart form field '{FIELD}' "
            f"(curl -F {FIELD}=@image.png)",
            status=415,
        )
    parts: list[Part] = []
    header: list[bytes] = [b"", b""]

    def begin() -> None:
        parts.append(Part())

    def header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def header_end() -> None:
        parts[-1].headers[header[0].decode("latin-1").lower()] = header[1]
        header[0], header[1] = b"", b""

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    callbacks = {
        "on_part_begin": begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header_end,
        "on_part_data": part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadError(
            f"the multipart body is malformed ({type(exc).__name__})",
            hint=f"send the image as the form field '{FIELD}' (curl -F {FIELD}=@image.png)",
        ) from None
    return parts


def file_field(body: bytes, content_type: str | None) -> bytes:
    """The bytes of the form field ``file``; 422 when the form has none, 400 when it is empty."""
    for part in parse_parts(body, content_type):
        if part.disposition().get(b"name") == FIELD.encode():
            if not part.data:
                raise UploadError(
                    "the uploaded file is empty", hint="send the image file's contents"
                )
            return bytes(part.data)
    raise UploadError(
        f"the form has no field '{FIELD}'",
        hint=f"send the image as the multipart form field '{FIELD}' (curl -F {FIELD}=@image.png)",
        status=422,
    )
