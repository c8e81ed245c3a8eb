"""The admin's backup page (a passphrase form that downloads the encrypted file) and ``POST /api/v1/backup``.

The file is written into the data directory by the node's backup service (``app/backups.py``), streamed
to the browser or the CLI as an attachment and deleted. The write is shielded: a request cancelled
meanwhile leaves it to end (one backup at a time), then its file is deleted. A download is recorded as the
last backup only once its last byte was sent (``pasar backup`` records its own once the file is saved).
The form carries the session's CSRF token like every admin form (the guard checks it); the API takes the
bearer token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..core.backupfile import Manifest
from ..core.errors import BadRequest, PasarError
from ..operations.backup import BackupService, summary
from . import render
from .auth import SESSION
from .bodies import read_form

BACKUPS: web.AppKey[BackupService] = web.AppKey("backups")
BLOCK = 1 << 20
FIRST, AGAIN = "passphrase", "passphrase_again"  # the form's fields
log = logging.getLogger(__name__)
_DISCARDING: set[asyncio.Task[None]] = set()  # cleanups of cancelled downloads (a reference keeps them alive)


def _download_name() -> str:
    """Not the scheduled backups' name: a download saved into ``backup_dir`` is never rotated away."""
    return time.strftime("pasar-download-%Y%m%dT%H%M%SZ.pasarbak", time.gmtime())


async def _page(request: web.Request, errors: dict[str, str], status: int = 200) -> web.Response:
    session = request.get(SESSION)
    last = await request.app[BACKUPS].last()
    context: dict[str, Any] = {
        "csrf": session.csrf if session else "",
        "notice": "",
        "last": last,
        "last_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last.at)) if last else "",
        "errors": errors,
    }
    return render.page(request, "admin/backup.html", context, status=status)


async def backup_page(request: web.Request) -> web.Response:
    return await _page(request, {})


async def _discard(writing: asyncio.Future[Manifest], path: Path) -> None:
    """After the request was cancelled: let the write end (it holds the one-at-a-time lock), delete its file."""
    try:
        await writing
    except (PasarError, OSError) as exc:  # already recorded as the last backup's outcome by the service
        log.info("a backup whose request was cancelled failed: %s", getattr(exc, "message", None) or exc)
    finally:
        await asyncio.to_thread(path.unlink, True)


async def _write(service: BackupService, path: Path, passphrase: str, with_directory: bool) -> Manifest:
    """The backup at ``path``; shielded: a cancelled request leaves the write to end, then its file goes."""
    writing = asyncio.ensure_future(service.write(path, passphrase, with_directory=with_directory, record=False))
    try:
        return await asyncio.shield(writing)
    except asyncio.CancelledError:
        task = asyncio.create_task(_discard(writing, path), name="backup cut off")
        _DISCARDING.add(task)
        task.add_done_callback(_DISCARDING.discard)
        raise
    except BaseException:
        await asyncio.to_thread(path.unlink, True)
        raise


async def _send(request: web.Request, passphrase: str, with_directory: bool, how: str | None) -> web.StreamResponse:
    """Write the backup, stream it as an attachment, delete the file; then record it as ``how`` (if given)."""
    service = request.app[BACKUPS]
    path = service.scratch()
    manifest = await _write(service, path, passphrase, with_directory)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{_download_name()}"',
                "Cache-Control": "no-store",
            }
        )
        response.content_length = path.stat().st_size
        await response.prepare(request)
        with path.open("rb") as fh:
            while block := await asyncio.to_thread(fh.read, BLOCK):
                await response.write(block)
        await response.write_eof()
    finally:
        await asyncio.to_thread(path.unlink, True)
    if how:  # every byte went out: only now is it the last backup
        await service.record(True, f"{how}: {summary(manifest)}")
    return response


def _check(first: str, again: str) -> dict[str, str]:
    """Form errors by field name (none: the two entries match and are long enough)."""
    if len(first) < 8:
        return {FIRST: "choose a passphrase of at least 8 characters"}
    if first != again:
        return {AGAIN: "the two passphrases differ: type the same one twice"}
    return {}


async def download(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    passphrase, again = str(form.get(FIRST, "")), str(form.get(AGAIN, ""))
    errors = _check(passphrase, again)
    if errors:
        return await _page(request, errors, 422)
    return await _send(request, passphrase, form.get("with_directory") == "on", "downloaded from the admin page")


async def api_backup(request: web.Request) -> web.StreamResponse:
    """``{"passphrase": "...", "with_directory": false}`` -> the encrypted file (``pasar backup`` on a running node)."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest('send a JSON object: {"passphrase": "..."}') from exc
    passphrase = body.get("passphrase") if isinstance(body, dict) else None
    if not isinstance(passphrase, str) or not passphrase:
        raise BadRequest('send a JSON object with the backup\'s "passphrase"')
    # ``pasar backup`` records the backup itself once the file is saved.
    return await _send(request, passphrase, body.get("with_directory") is True, None)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/backup", backup_page, name="backup")
    app.router.add_post("/backup", download, name="backup-download")
    app.router.add_post("/api/v1/backup", api_backup, name="api-backup")
