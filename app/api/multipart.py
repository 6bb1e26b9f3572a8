"""Multipart uploads written straight to the service's scratch folder as the body arrives.

Starlette parses a multipart body into a ``SpooledTemporaryFile`` per file part, one thread-pool hop per
received piece, and the routes then copied that file again into the scratch folder to hash it and check
its size: every upload went through the disk twice. The routes that take a file (``/v1/datasets``, a
prediction run's upload) use :class:`ScratchUploadRoute` instead: its request parses the body with
:class:`ScratchMultiPartParser`, whose file parts are written, hashed and counted directly into a
:class:`ScratchFile` under ``<Settings.scratch("uploads")>/<this process's folder>/``
while the body streams in. The route takes the result with :func:`stored_upload` (no copy). A route that
takes a file must use this route class.

Form fields, limits and errors are Starlette's own (this is its parser with the file sink replaced); the
body's overall size is capped while it arrives by ``app.api.limits.BodyLimit``, and the file's size is
checked against the caller's quota by :func:`stored_upload`. A scratch file is removed when its
``UploadFile`` is closed (FastAPI closes it after the response; Starlette on a parse error), and a killed
process's files go with its folder at the next start-up (``app.services.uploads.remove_stale``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import Request, params
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.limits import MULTIPART_SLACK
from app.errors import BadRequest, InvalidInput, PayloadTooLarge, unsupported_media_type
from app.services.quotas import upload_too_large
from app.services.uploads import StoredUpload, process_folder

try:
    from python_multipart.multipart import parse_options_header
except ImportError:  # pragma: no cover - older python-multipart
    from multipart.multipart import parse_options_header


class ScratchFile:
    """The file behind a spooled ``UploadFile``: a private temporary file in ``directory``, appended to as the
    body arrives, with its running size (bytes) and sha256. ``close()`` closes and deletes it (idempotent).

    The file on disk is made at the first byte (an empty part opens nothing), and its descriptor is closed
    when its part ends (``finish``) and reopened only when it is read, so a body of many file parts holds
    at most one open descriptor while it is parsed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path: Path | None = None
        self.size = 0
        self._digest = hashlib.sha256()
        self._fh = None
        self._pos = 0
        self._closed = False

    @property
    def path(self) -> Path:
        """Where the file is (made empty if nothing was written yet)."""
        if self._path is None:
            fd, name = tempfile.mkstemp(prefix="upload-", dir=self.directory)
            os.close(fd)
            self._path = Path(name)
        return self._path

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end, counting and hashing it (called in the event loop: a write to the page
        cache of one received piece, ~64 KiB)."""
        if self._closed:
            raise ValueError("the upload's file is closed")
        if self._fh is None:
            self._fh = open(self.path, "ab")
        self.size += len(data)
        self._digest.update(data)
        self._fh.write(data)

    def finish(self) -> None:
        """The part ended: flush and close the descriptor (the file stays, to be read later)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def sha256(self) -> str:
        """Hex sha256 of what was appended so far."""
        return self._digest.hexdigest()

    # the file protocol ``UploadFile`` uses to read (in its thread pool); writes go through ``append``
    def _reader(self):
        if self._closed:
            raise ValueError("the upload's file is closed")
        self.finish()
        self._fh = open(self.path, "rb")
        self._fh.seek(self._pos)
        return self._fh

    def read(self, size: int = -1) -> bytes:
        """Read from the current position."""
        fh = self._fh if self._fh is not None and self._fh.mode == "rb" else self._reader()
        data = fh.read(size)
        self._pos = fh.tell()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (opens nothing: the next read does)."""
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self.size + offset
        if self._fh is not None and self._fh.mode == "rb":
            self._fh.seek(self._pos)
        return self._pos

    def tell(self) -> int:
        """The current position."""
        return self._pos

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Close and delete the file; a second call does nothing."""
        self._closed = True
        try:
            self.finish()
        finally:
            if self._path is not None:
                self._path.unlink(missing_ok=True)


class _OverLimit(MultiPartException):
    """A form the parser stops reading (a file part past the tenant's upload quota, a field given twice, a text
    field named ``file``); carries the service's error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class FormServiceError(HTTPException):
    """A service error raised while a form is parsed. FastAPI passes an ``HTTPException`` from its form parsing
    on as it is (anything else becomes a bare 400), and the app's handler answers ``error`` in its place
    (``app.api.handlers``)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(status_code=400, detail=str(error))
        self.error = error


class ScratchMultiPartParser(MultiPartParser):
    """Starlette's multipart parser whose file parts go to :class:`ScratchFile` s in ``directory``, written in
    the callback as each piece arrives (no thread-pool hop per piece, no second copy). A file part the body
    ends inside (no closing boundary: python-multipart's ``finalize`` does not complain) is not in the form,
    and its file is deleted here, as is every file when parsing fails."""

    def __init__(self, *args, directory: Path, file_limit: int | None = None,
                 over_limit: Callable[[], Exception] | None = None, allowed: frozenset[str] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.directory = directory
        self.allowed = allowed  # the route's part names, when it gives them: any other is refused as it arrives
        self.file_limit, self.over_limit = file_limit, over_limit
        self._names: set[str] = set()
        self._open_part: str | None = None  # the name of the part whose headers ended and whose end has not come
        self._ended = False  # the closing boundary ("--<boundary>--") was read

    def on_headers_finished(self) -> None:
        """As Starlette's, but a file part's ``UploadFile`` is backed by a ``ScratchFile``. A 422 stops the parse at
        a second part of any name (FastAPI would silently take the last one: which was meant is not ours to guess)
        and at a ``file`` part that is a text field (both upload routes take exactly one file, named ``file``).
        A part past the form's ``max_fields`` / ``max_files`` is a 422 naming it (Starlette's is a bare 400)."""
        try:
            super().on_headers_finished()
        except MultiPartException as exc:
            name = getattr(self._current_part, "field_name", "") or ""
            if not exc.message.startswith("Too many"):
                raise
            self._check_allowed(name)
            raise _OverLimit(InvalidInput(
                f"the form's part {name!r} is one too many ({exc.message.rstrip('.')}): this route takes the parts "
                "its documentation lists, each once; remove the others", param=name or "body")) from None
        part = self._current_part
        name = part.field_name
        self._check_allowed(name)
        if name in self._names:
            if name == "file":
                raise _OverLimit(InvalidInput("the form has more than one part named 'file': send exactly one file "
                                              "per request", param="file"))
            raise _OverLimit(InvalidInput(f"form field {name!r} is given more than once: give it once", param=name))
        self._names.add(name)
        self._open_part = name
        if name == "file" and part.file is None:
            raise _OverLimit(InvalidInput("the form field 'file' must be a file (CSV, JSONL or Parquet), sent with "
                                          "a file name: curl -F file=@data.csv", param="file"))
        if part.file is not None:
            spooled = self._files_to_close_on_error.pop()  # the SpooledTemporaryFile Starlette made: unused
            spooled.close()
            scratch = ScratchFile(self.directory)
            self._files_to_close_on_error.append(scratch)
            part.file.file = scratch

    def _check_allowed(self, name: str) -> None:
        """A 422 naming the first part whose name the route does not take (when it said which it takes)."""
        if self.allowed is not None and name not in self.allowed:
            raise _OverLimit(InvalidInput(f"unknown form field {name!r}: use {', '.join(sorted(self.allowed))}",
                                          param=name or "body"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        """A file part's bytes are appended to its scratch file at once; a field's kept as Starlette does."""
        part = self._current_part
        if part.file is None:
            try:
                super().on_part_data(data, start, end)
            except MultiPartException as exc:  # a text field past max_part_size: name it, as a 422
                raise _OverLimit(InvalidInput(f"form field {part.field_name!r} is too long ({exc.message.rstrip('.')}):"
                                              " text fields hold a column name or a short value",
                                              param=part.field_name or "body")) from None
            return
        if self.file_limit is not None and part.file.file.size + (end - start) > self.file_limit:
            raise _OverLimit(self.over_limit())  # a MultiPartException: Starlette closes (deletes) every file
        part.file.file.append(data[start:end])
        part.file.size = part.file.file.size

    def on_end(self) -> None:
        """The closing boundary was read: the body is whole."""
        self._ended = True

    def on_part_end(self) -> None:
        """As Starlette's; a file part's descriptor is closed (its file stays until the form is closed)."""
        super().on_part_end()
        self._open_part = None
        if self._current_part.file is not None:
            self._current_part.file.file.finish()

    async def parse(self) -> FormData:
        """Starlette's parse; then the files of parts that never ended are deleted (they are not in the form,
        so closing the form would not reach them), and a body that ended before its closing boundary is refused.

        Raises:
            _OverLimit: wrapping a ``BadRequest`` (400) when the body ended before its closing boundary
                (``--<boundary>--``): the upload was cut off (the client stopped, or sent a ``Content-Length``
                shorter than the body), inside a part (named, as ``param``) or between parts; every file deleted.
                python-multipart's ``finalize`` does not check this, and Starlette then returned the parts read so
                far (a cut inside the file's headers was "file: Field required").
        """
        form = await super().parse()
        kept = {id(value.file) for _, value in form.multi_items() if isinstance(value, UploadFile)}
        for scratch in self._files_to_close_on_error:
            if id(scratch) not in kept:
                scratch.close()
        if not self._ended:
            await form.close()
            where = (f"inside the form's part {self._open_part!r}" if self._open_part is not None
                     else "before its closing boundary")
            raise _OverLimit(BadRequest(
                f"the multipart body ended {where}: the upload was cut off (or its Content-Length is shorter than "
                "the body); send the whole body again, ending with its closing boundary",
                param=self._open_part or "body"))
        return form


class ScratchFormRequest(Request):
    """A request whose multipart body is parsed by :class:`ScratchMultiPartParser` into this process's
    scratch folder; other bodies as Starlette parses them."""

    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        content_type, options = parse_options_header(self.headers.get("Content-Type"))
        if self._form is not None or content_type != b"multipart/form-data":
            return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
        if not options.get(b"boundary"):  # absent, or "boundary=" with nothing after it
            raise FormServiceError(multipart_error("Missing boundary in multipart.", ""))
        directory = process_folder(self.app.state.settings.scratch("uploads"))
        quotas = getattr(self.state, "upload_quota", None)  # set by check_before_body for a tenant quota
        stream = self.stream()
        try:
            parser = ScratchMultiPartParser(self.headers, stream, max_files=max_files, max_fields=max_fields,
                                            max_part_size=max_part_size, directory=directory,
                                            file_limit=quotas.upload_bytes if quotas else None,
                                            over_limit=lambda: upload_too_large(quotas),
                                            allowed=getattr(self.state, "form_fields", None))
            self._form = await parser.parse()
        except _OverLimit as exc:
            raise FormServiceError(exc.error) from None
        except MultiPartException as exc:
            raise FormServiceError(multipart_error(exc.message, self.headers.get("Content-Type", ""))) from exc
        finally:
            await stream.aclose()
        return self._form


def multipart_error(message: str, content_type: str) -> BadRequest:
    """The 400 for a multipart body Starlette's parser refused with ``message``, saying what to fix: a part
    without a name (``param="body"``), a body that is not delimited by the boundary ``content_type`` names or a
    Content-Type without one (``param="Content-Type"``); any other message is passed on as it is."""
    how = "let the HTTP client build the body and its Content-Type (curl -F file=@data.csv)"
    if '"name" must be provided' in message:
        return BadRequest("a part of the multipart body has no name in its Content-Disposition header: send the "
                          f"file as the form field 'file' and each setting under its own name; {how}", param="body")
    if message.startswith("Invalid multipart data"):
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary", b"").decode("latin-1")
        return BadRequest(f"the body is not multipart data delimited by the boundary its Content-Type names "
                          f"({boundary!r}): {how}", param="Content-Type")
    if message.startswith("Missing boundary"):
        return BadRequest(f"the Content-Type multipart/form-data names no boundary: {how}", param="Content-Type")
    return BadRequest(message, param="body")


async def check_before_body(request: Request) -> None:
    """Before a multipart body is read: authenticate the caller (``app.api.auth.authenticate_before_body``, in the
    thread pool) and refuse a declared ``Content-Length`` past the tenant's upload quota, so that a caller without
    a good key, or over its quota, costs no spooled file; a tenant quota below the service's limit is also kept on
    the request (``request.state.upload_quota``), and the parser cuts a file part off when it passes it. Anything
    else passes untouched.

    Raises:
        Unauthorized, Forbidden, RateLimited: as ``authenticate`` (401, 403, 429).
        QuotaExceeded: the declared body is larger than the tenant's ``upload_bytes`` (429 ``quota_exceeded``).
    """
    content_type, _ = parse_options_header(request.headers.get("content-type"))  # lower-cased, as the parser's
    if request.method != "POST" or content_type != b"multipart/form-data":
        return
    from app.api.auth import authenticate_before_body

    principal = await run_in_threadpool(authenticate_before_body, request)
    quotas = principal.quotas
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > quotas.upload_bytes + MULTIPART_SLACK:
        raise upload_too_large(quotas)
    if quotas.upload_bytes < request.app.state.settings.max_upload_bytes:
        request.state.upload_quota = quotas  # a body with no (or a lying) length is cut at the quota as it streams


class ScratchUploadRoute(APIRoute):
    """An ``APIRoute`` whose handler sees a :class:`ScratchFormRequest` (FastAPI's documented way to give a
    route its own ``Request`` class), after ``check_before_body``; give it to an ``APIRouter`` as
    ``route_class``."""

    def get_route_handler(self):
        """The route's handler, called with the request re-wrapped as a ``ScratchFormRequest``. A route whose body
        is a form only (``/v1/datasets``) answers a POST of any other Content-Type with 415, after authenticating
        (FastAPI would say "file: Field required", a 422 that does not name the cause), and refuses a part its
        parameters do not name (422 naming it)."""
        handler = super().get_route_handler()
        form_only = self.body_field is not None and isinstance(self.body_field.field_info, params.Form)
        # a form-only route's parts are its form parameters: any other part is a 422 naming it as it arrives (a
        # misspelt gold_label_colum was dropped without a word, the gold labels with it)
        parts = frozenset(field.alias for field in self.dependant.body_params) if form_only else None

        async def scratch_handler(request: Request):
            scratch = ScratchFormRequest(request.scope, request.receive)
            if parts is not None:
                scratch.state.form_fields = parts
            await check_before_body(scratch)
            if form_only and request.method == "POST":
                media, _ = parse_options_header(request.headers.get("content-type"))
                if media != b"multipart/form-data":
                    from app.api.auth import authenticate_before_body

                    await run_in_threadpool(authenticate_before_body, scratch)
                    raise unsupported_media_type(media.decode("latin-1"), "a multipart/form-data upload with the "
                                                 "file in the part 'file' (curl -F file=@data.csv)")
            return await handler(scratch)

        return scratch_handler


def stored_upload(upload: UploadFile, limit: int) -> StoredUpload:
    """The spooled file of ``upload`` (parsed by :class:`ScratchFormRequest`) as a :class:`StoredUpload` (path,
    size, sha256), nothing copied. The file stays the upload's: it is deleted when the upload is closed.

    Raises:
        PayloadTooLarge: the file is larger than ``limit`` bytes (nothing is kept).
        TypeError: the upload was not parsed by a ``ScratchUploadRoute`` (a route without that route class).
    """
    scratch = upload.file
    if not isinstance(scratch, ScratchFile):
        raise TypeError(f"the upload's file is a {type(scratch).__name__}: the route must use ScratchUploadRoute")
    if scratch.size > limit:
        scratch.close()
        raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes: split it or sample it",
                              param="file")
    scratch.finish()
    return StoredUpload(scratch.path, scratch.size, scratch.sha256)
