"""A multipart/form-data body (RFC 7578) read as it streams in (``read_form``): its one file
part written straight to a file on disk, its text fields (few and small) kept; nothing of the
file is ever held whole in memory. The parsing is python-multipart's streaming parser (the one
Starlette's own form reading uses, which spools files to an unnamed temp file in the system's
temp folder instead, where GDAL could not open them by name).

Refused with one line each (APIError 400): not multipart, no boundary, a part without a name, a
second file, a file under another field name, too many or too large text fields, a body that
ends before its closing boundary. The body's size limit is the caller's (``api_guard``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import AsyncIterator, BinaryIO

import anyio
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from remoteglm.serve.api_errors import APIError

MAX_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024
WRITE_CHUNK = 1 << 20  # bytes handed to the parser (and the disk) at a time, off the event loop


class _Form:
    """python-multipart's callbacks: fields into ``fields``, the file part into ``out``."""

    def __init__(self, file_field: str, out: BinaryIO):
        self.file_field, self.out = file_field, out
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._text = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self._headers, self._name, self._is_file, self._text = {}, None, False, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        if name is None:
            raise APIError(400, "a part of the multipart body has no name (Content-Disposition: form-data; name=...)",
                           code="invalid_form")
        self._name = name.decode("utf-8", "replace")
        filename = opts.get(b"filename")
        if filename is not None:
            if self._name != self.file_field:
                raise APIError(400, f"form field {self._name!r} is a file: send the raster as the field "
                                    f"{self.file_field!r} and the options as text fields", param=self._name,
                               code="invalid_form")
            if self.filename is not None:
                raise APIError(400, f"more than one file in the form: send one raster as {self.file_field!r}",
                               param=self.file_field, code="invalid_form")
            self.filename = safe_name(filename.decode("utf-8", "replace"))
            self._is_file = True
        elif self._name in self.fields or len(self.fields) >= MAX_FIELDS:
            raise APIError(400, f"form field {self._name!r} is repeated, or there are more than {MAX_FIELDS} fields",
                           param=self._name, code="invalid_form")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.out.write(data[start:end])
            return
        self._text += data[start:end]
        if len(self._text) > MAX_FIELD_BYTES:
            raise APIError(400, f"form field {self._name!r} is over {MAX_FIELD_BYTES // 1024} KiB", param=self._name,
                           code="invalid_form")

    def part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.fields[self._name] = self._text.decode("utf-8", "replace")

    def end(self) -> None:
        self.ended = True


def safe_name(name: str) -> str:
    """A file name a client sent, reduced to its last path component and printable characters."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:120]
    return base or "upload"


def form_boundary(content_type: str | None) -> bytes:
    media, opts = parse_options_header((content_type or "").encode("latin-1", "replace"))
    boundary = opts.get(b"boundary")
    if media != b"multipart/form-data" or not boundary:
        raise APIError(400, "send the raster as multipart/form-data (a file field and text fields) with its boundary",
                       code="unsupported_content_type")
    return boundary


async def read_form(chunks: AsyncIterator[bytes], content_type: str | None, file_field: str,
                    out: Path) -> tuple[dict[str, str], str | None]:
    """Read a multipart body from ``chunks``: ``(text fields, the file's name)``, the file part
    (field ``file_field``) written to ``out`` (the name is None and ``out`` empty when there was
    none). The writing runs in a worker thread, a megabyte at a time."""
    boundary = form_boundary(content_type)
    with open(out, "wb") as f:
        form = _Form(file_field, f)
        parser = MultipartParser(boundary, form.callbacks())

        def feed(data: bytes) -> None:
            try:
                parser.write(data)
            except MultipartParseError as e:
                raise APIError(400, f"the multipart body is malformed: {str(e).splitlines()[0][:200]}",
                               code="invalid_form") from None

        pending = bytearray()
        async for chunk in chunks:
            pending += chunk
            if len(pending) >= WRITE_CHUNK:
                data, pending = bytes(pending), bytearray()
                await anyio.to_thread.run_sync(feed, data)
        if pending:
            await anyio.to_thread.run_sync(feed, bytes(pending))
        parser.finalize()
    if not form.ended:
        raise APIError(400, "the multipart body ended before its closing boundary (a cut upload?)", code="invalid_form")
    return form.fields, form.filename
