"""Log setup of every ``pasar`` command: text lines, or one JSON object per line (``log_format = json``).

A JSON line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message`` (the
arguments filled in) and, when the record carries one, ``exception`` (the traceback as text, causes
included) and ``stack``. Log shippers (journald's JSON output, Vector, Loki's promtail) read it as is.
Non-ASCII is escaped (``\\u00e9``): the line stays valid JSON whatever stderr's encoding. A record whose
arguments do not fit its format still gives one line (``message`` unfilled, ``args``, ``format_error``).
In JSON mode Python's warnings and an uncaught exception are JSON records too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        try:
            line["message"] = record.getMessage()
        except Exception as exc:  # a bug in the log call: still one line, with what it had
            line |= {"message": str(record.msg), "args": repr(record.args), "format_error": repr(exc)}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=True)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook`` in JSON mode: the traceback as one CRITICAL record."""
    logging.getLogger("pasar").critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))


def setup_logging(level: str, log_format: str, *, stream: TextIO | None = None) -> None:
    """The root logger's one handler: ``log_format`` "text" or "json" (the settings table checks the value)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if log_format == "json":  # warnings and a crash's traceback: records too, not plain text
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
