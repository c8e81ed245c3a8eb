"""What every ``pasar`` command shares: printing, reading the user's files, listing problems."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import ConfigError

MAX_PROBLEMS = 50  # problems printed one per line before "... and N more"


def out(text: str = "") -> None:
    print(text, flush=True)


def _natural(key: str) -> list[int | str]:
    """Sort "line 9" before "line 10", "[2].price_sat" before "[10].title"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def problem_lines(fields: dict[str, str], limit: int = MAX_PROBLEMS) -> list[str]:
    """Each problem on its own line ("line 12: price_sat: is required"), at most ``limit`` and a count of the rest."""
    lines = [f"{key}: {message}" for key, message in sorted(fields.items(), key=lambda kv: _natural(kv[0]))]
    if len(lines) > limit:
        return [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
