"""``pasar listing import``: a checked CSV stored in durable, acknowledged batches."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import config as cfg
from ..core.errors import PasarError, ValidationError
from ..market import importer
from .output import out, read_file

if TYPE_CHECKING:
    from .backends import Backend


class Progress:
    """A bar on a terminal; one line per durable batch otherwise (logs, pipes)."""

    def __init__(self, total: int) -> None:
        self.total, self.tty = total, sys.stderr.isatty()

    def update(self, done: int, line: int) -> None:
        """``done`` rows are stored, the last of them from CSV line ``line``."""
        if self.tty:
            width = 30
            filled = width * done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
            if done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"imported {done}/{self.total} (through line {line})\n")
        sys.stderr.flush()


MAX_BATCH_BYTES = 32 * 1024 * 1024  # estimated JSON per import batch, and at most half of the request limit


class _Importer:
    """Writes checked rows in batches; knows how far it got when something fails."""

    def __init__(self, backend: Backend, onion: str, rows: list[importer.Row]) -> None:
        self.backend, self.onion, self.rows = backend, onion, rows
        self.done = 0  # rows acknowledged: stored now, or skipped as stored before (same import key)
        self.skipped = 0
        self._image_ids: dict[Path, str] = {}  # a file used by many rows is uploaded once

    async def _items(self, batch: list[importer.Row]) -> list[object]:
        items: list[object] = []
        for row in batch:
            ids = []
            for path in row.images:
                if path not in self._image_ids:
                    try:
                        self._image_ids[path] = (await self.backend.add_image(self.onion, read_file(path)))["id"]
                    except ValidationError as exc:
                        problem = "; ".join(exc.fields.values()) or exc.message
                        raise ValidationError({f"line {row.line}: images": f"{path}: {problem}"}) from exc
                ids.append(self._image_ids[path])
            items.append({**row.data, "images": ids, **({"import_key": row.key} if row.key else {})})
        return items

    async def write(self, batch: list[importer.Row]) -> None:
        try:
            stored = await self.backend.add_listings(self.onion, await self._items(batch))
        except ValidationError as exc:  # "[3].price_sat" (or "price_sat" for one row) -> "line N: price_sat"
            fields = {_row_field(batch, k): v for k, v in exc.fields.items()}
            raise ValidationError(fields, f"{exc.headline}; {self._stopped(batch, refused=True)}") from exc
        except PasarError as exc:  # the node went away, a full disk, ...: say how far we got
            raise PasarError(f"{exc.message.rstrip('.')}. {self._stopped(batch, refused=False)}") from exc
        self.done += len(batch)
        self.skipped += len(batch) - len(stored)

    def _stopped(self, batch: list[importer.Row], *, refused: bool) -> str:
        stored = f"{self.done} of {len(self.rows)} rows were acknowledged as stored"
        if self.done:
            stored += f" (CSV lines {self.rows[0].line}-{self.rows[self.done - 1].line})"
        first, last = batch[0].line, batch[-1].line
        if refused:  # refused before the write: certainly not stored
            return f"{stored}; lines {first}-{last} were not: fix them, then import the rest with `--from-line {first}`"
        return (
            f"{stored}. Lines {first}-{last} were being written and may or may not be stored: import the rest "
            f"with `--from-line {first}`; this is safe, rows already stored are skipped (not stored twice)"
        )


def _row_field(batch: list[importer.Row], key: str) -> str:
    if key.startswith("line "):  # already names its line
        return key
    if key.startswith("[") and "]" in key:
        index, _, rest = key[1:].partition("]")
        if index.isdigit() and int(index) < len(batch):
            return f"line {batch[int(index)].line}: {rest.lstrip('.')}"
    return f"line {batch[0].line}: {key}" if len(batch) == 1 else key


async def cmd_listing_import(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..app import request_limit
    from .backends import open_backend

    path = Path(args.file)
    text = importer.decode(read_file(path))
    limits = importer.ImageLimits(max_bytes=config.max_image_bytes, max_side=config.max_image_side)
    now = int(time.time())
    rows = await asyncio.to_thread(
        importer.parse, text, base_dir=path.parent, max_images=config.max_images, now=now, image_limits=limits,
        from_line=args.from_line,
    )  # fmt: skip
    max_bytes = min(MAX_BATCH_BYTES, request_limit(config) // 2)
    progress = Progress(len(rows))
    async with open_backend(config) as backend:
        onion = await backend.resolve(args.store)
        run = _Importer(backend, onion, rows)
        for batch in importer.batches(rows, max_bytes=max_bytes, fixed=args.batch):
            await run.write(batch)
            progress.update(run.done, batch[-1].line)
    out(f"imported {run.done - run.skipped} listings into {onion}.onion")
    if run.skipped:
        out(f"{run.skipped} rows were already imported from this file and were skipped")
    return 0
