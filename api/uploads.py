"""A `multipart/form-data` upload read as a stream: its fields, and its one file written straight to disk as the
parts arrive (never held whole in memory), as Proxmox's HTTP server takes an upload (pve-http-server
`AnyEvent.pm` `file_upload_multipart`).

The file part is the field the endpoint names (`filename` for `POST .../upload`, as proxmoxer and the Proxmox GUI
send it); its value is the client's file name. Fields may come before or after it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from api.bodies import PARAMS_BODY_LIMIT, too_large
from api.errors import ApiError
from hypervisor.storage_files import FileRefused, receive_file

MAX_PARTS = 64


@dataclass
class Upload:
    fields: dict[str, str]  # every field, the file's own (its client file name) included
    size: int  # bytes of the file written


class _Parts:
    """Turns body chunks into multipart events, the file part's data as an async iterator of its own."""

    def __init__(self, body: AsyncIterable[bytes], boundary: str) -> None:
        self.body = body.__aiter__()
        self.decoder = MultipartDecoder(boundary.encode("latin-1", "replace"), max_parts=MAX_PARTS)
        self.ended = False

    async def next(self):
        """The next event (Field, File, Data or Epilogue); ApiError 400 for a body that is not multipart."""
        while True:
            try:
                event = self.decoder.next_event()
            except RequestEntityTooLarge:
                raise ApiError(400, f"malformed multipart body - more than {MAX_PARTS} parts") from None
            except Exception as exc:  # whatever a part's headers make werkzeug raise
                raise ApiError(400, f"malformed multipart body - {exc}") from None
            if not isinstance(event, NeedData):
                return event
            if self.ended:
                raise ApiError(400, "malformed multipart body - it ends inside a part")
            try:
                self.decoder.receive_data(await self.body.__anext__())
            except StopAsyncIteration:
                self.ended = True
                self.decoder.receive_data(None)

    async def data(self):
        """The current part's data, chunk by chunk."""
        while True:
            event = await self.next()
            if not isinstance(event, Data):
                raise ApiError(400, "malformed multipart body - a part has no data")
            if event.data:
                yield event.data
            if not event.more_data:
                return


async def read_upload(body: AsyncIterable[bytes], boundary: str, file_field: str,
                      begin: Callable[[dict[str, str], str], str], limit: int) -> Upload:
    """Read a multipart body: its text fields (UTF-8, at most PARAMS_BODY_LIMIT bytes in all) and its file, which is
    written to the path `begin(fields so far, client file name)` answers (`begin` may refuse by raising), at most
    `limit` bytes (413 above). Raises ApiError 400 for a malformed body, a second file, or none; the file written is
    removed on any failure."""
    if not boundary:
        raise ApiError(400, "malformed multipart body - no boundary")
    parts = _Parts(body, boundary)
    fields: dict[str, str] = {}
    path, size, field_bytes = None, 0, 0
    try:
        while not isinstance(event := await parts.next(), Epilogue):
            if isinstance(event, File):
                if event.name != file_field or path is not None:
                    raise ApiError(400, "Parameter verification failed",
                                   {event.name or "file": f"unexpected file part - only '{file_field}' is a file"})
                fields[file_field] = event.filename or ""
                path = begin(dict(fields), fields[file_field])
                try:
                    size = await receive_file(parts.data(), path, limit)
                except FileRefused:
                    path = None
                    raise too_large(limit) from None
            elif isinstance(event, Field):
                if not event.name or event.name == file_field:
                    raise ApiError(400, "malformed multipart body - a field has no name, or the file's name")
                chunks = []
                async for chunk in parts.data():
                    field_bytes += len(chunk)
                    if field_bytes > PARAMS_BODY_LIMIT:
                        raise too_large(PARAMS_BODY_LIMIT)
                    chunks.append(chunk)
                try:
                    fields[event.name] = b"".join(chunks).decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(400, f"malformed multipart part '{event.name}' - not UTF-8") from None
        if path is None:
            raise ApiError(400, "Parameter verification failed", {file_field: "no file uploaded"})
    except BaseException:
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        raise
    return Upload(fields, size)
