"""Receive a multipart upload straight to disk, hashing and counting as it streams.

Starlette's form parser would spool the file to the system temp directory and only then
let us look at its size; this parser writes the one file part into Quarry's staging
directory, computes its sha256 on the way and stops at the size cap with a 413, so an upload
is never held whole in memory nor written twice.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import APIError, TooLarge, Unprocessable, UnsupportedMedia

FILE_FIELD = "file"
_MAX_TEXT_FIELD = 10_000
_MAX_TEXT_FIELDS = 10
_FLUSH_BYTES = 1 << 20
# The longest an upload may take to arrive (200 MB at 0.5 Mbit/s): a request cannot hold
# its staging folder longer, which is what lets the datasets reaper (worker/datasets.py)
# tell an upload an API crash abandoned from one still arriving. (To become the setting
# UPLOAD_TIMEOUT_S.)
UPLOAD_TIMEOUT_S = 3600


class UploadTimeout(APIError):
    status_code = 408
    code = "request_timeout"


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(raw: str) -> str:
    """The last path component, without control characters; never used as a path on disk."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*')
    return name.strip(" .")[:255] or "upload"


class _Receiver:
    def __init__(self, dest: Path, max_bytes: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self.error: APIError | None = None
        self._fh: IO[bytes] | None = None
        self._buffer = bytearray()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._part_name: str | None = None
        self._part_is_file = False
        self._text = bytearray()
        self.complete = False

    # --- parser callbacks -------------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._part_is_file = False
        self._text = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        key = self._header_field.decode("latin-1").lower()
        self._headers[key] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        self._part_name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is None:
            if len(self.fields) >= _MAX_TEXT_FIELDS:
                self._fail(Unprocessable("Too many form fields."))
            return
        if self._part_name != FILE_FIELD:
            self._fail(Unprocessable(f"Send the file in the form field '{FILE_FIELD}'."))
            return
        if self.filename is not None:
            self._fail(Unprocessable("Send one file per request (or several inside a ZIP)."))
            return
        self.filename = safe_filename(filename.decode("utf-8", "replace"))
        self._part_is_file = True
        self._fh = open(self.dest, "wb")  # noqa: SIM115  (closed in finish())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data[start:end]
        if self._part_is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                limit_mb = self.max_bytes // (1024 * 1024)
                self._fail(TooLarge(f"The file is larger than the {limit_mb} MB upload limit."))
                return
            self._buffer += chunk
        else:
            self._text += chunk
            if len(self._text) > _MAX_TEXT_FIELD:
                self._fail(Unprocessable(f"Form field '{self._part_name}' is too long."))

    def on_part_end(self) -> None:
        if self.error is None and not self._part_is_file and self._part_name:
            self.fields[self._part_name] = self._text.decode("utf-8", "replace")

    def on_end(self) -> None:
        # The closing boundary: without it the body was cut short and the file may be too.
        self.complete = True

    # --- helpers ----------------------------------------------------------------------------
    def _fail(self, error: APIError) -> None:
        if self.error is None:
            self.error = error

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        if self._fh is not None and self._buffer:
            self.digest.update(self._buffer)
            self._fh.write(self._buffer)
            self._buffer.clear()

    def finish(self) -> None:
        if self._fh is not None:
            if self.error is None:
                self.flush()
            self._fh.close()
            self._fh = None


async def receive_upload(
    request: Request, dest: Path, max_bytes: int, timeout_s: float = UPLOAD_TIMEOUT_S
) -> ReceivedUpload:
    """Parse the multipart body into `dest`. Raises an APIError (4xx) and leaves no file
    behind when the request is not an acceptable upload, or has not arrived whole within
    `timeout_s`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMedia(
            f"Send the file as multipart/form-data in a field named '{FILE_FIELD}'."
        )
    receiver = _Receiver(dest, max_bytes)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        try:
            with anyio.fail_after(timeout_s):
                async for chunk in request.stream():
                    parser.write(chunk)
                    if receiver.error is not None:
                        break
                    if receiver.pending >= _FLUSH_BYTES:
                        # Hashing and writing release the GIL: off the event loop they cost
                        # other requests nothing.
                        await anyio.to_thread.run_sync(receiver.flush)
                else:
                    parser.finalize()
        except APIError:
            raise
        except TimeoutError:
            raise UploadTimeout(
                f"The upload did not arrive within {timeout_s:g} s and was stopped; send it "
                "again over a faster connection, or split the file."
            ) from None
        except Exception as exc:  # the multipart parser's own errors: malformed body
            raise Unprocessable(f"Malformed multipart body ({exc.__class__.__name__}).") from None
        finally:
            receiver.finish()
        if receiver.error is not None:
            raise receiver.error
        if receiver.filename is None:
            raise Unprocessable(f"No file found: send it in the form field '{FILE_FIELD}'.")
        if not receiver.complete:
            raise Unprocessable("The upload ended before its multipart body did; send it again.")
        if receiver.size == 0:
            raise Unprocessable("The file is empty.")
    except BaseException:
        dest.unlink(missing_ok=True)  # noqa: ASYNC240  (one unlink, on the error path)
        raise
    return ReceivedUpload(
        path=dest,
        filename=receiver.filename,
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
        fields=receiver.fields,
    )


def staging_area(data_dir: Path) -> Path:
    path = data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
