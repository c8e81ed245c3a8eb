"""``pasar doctor``'s verdicts: one ``Check`` per line, ``ok|warn|fail <check>: <detail / what to do>``.

Pure: the probing lives in ``node/app/doctor.py`` (and ``doctor_chain.py``), the printing in
``node/cli/doctor.py``. A ``fail`` is something that stops the node from working (stores not
reachable, payments not seen); a ``warn`` something to fix before it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level.value} {self.name}: {self.detail}"


def failed(checks: Sequence[Check]) -> bool:
    return any(c.level is Level.FAIL for c in checks)


def duration(seconds: float) -> str:
    """A short human figure: "45 s", "12 min", "5 h", "3 days"."""
    s = abs(int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 3 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n // 1024} KiB"
