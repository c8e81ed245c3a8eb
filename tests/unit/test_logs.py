"""``log_format = json``: one JSON object per line, with level, logger, message, time, and the exception."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from node.cli.logs import JsonFormatter


def record(msg: str, *args: object, exc: BaseException | None = None, stack: str | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("pasar.test", logging.WARNING, __file__, 1, msg, args, info, sinfo=stack)


def raised() -> BaseException:
    try:
        try:
            raise OSError("disk full")
        except OSError as cause:
            raise RuntimeError("could not write orders.sqlite") from cause
    except RuntimeError as exc:
        return exc


def test_a_line_carries_time_level_logger_and_the_filled_in_message() -> None:
    line = JsonFormatter().format(record("store %s: %d listings", "heron", 3))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj.keys() == {"time", "level", "logger", "message"}
    assert (obj["level"], obj["logger"], obj["message"]) == ("WARNING", "pasar.test", "store heron: 3 listings")
    offset = datetime.fromisoformat(obj["time"]).utcoffset()
    assert offset is not None and offset.total_seconds() == 0  # UTC


def test_an_exception_and_its_cause_are_in_one_line() -> None:
    line = JsonFormatter().format(record("write failed", exc=raised()))
    assert "\n" not in line
    text = json.loads(line)["exception"]
    assert "Traceback (most recent call last)" in text
    assert "OSError: disk full" in text and "RuntimeError: could not write orders.sqlite" in text
    assert "direct cause" in text


def test_newlines_quotes_and_non_ascii_stay_in_one_line() -> None:
    line = JsonFormatter().format(record('a "quoted"\nsecond line, café', stack="Stack (most recent call last):\n  x"))
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["message"] == 'a "quoted"\nsecond line, café' and obj["stack"].startswith("Stack")


def pasar(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env["PASAR_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "node", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_cli_writes_json_lines_with_the_exception(tmp_path: Path) -> None:
    # A data dir that is not initialised: the command fails, and at debug level the log has the traceback.
    done = pasar(tmp_path / "empty", "run", "--no-tor", "--log-level", "debug", "--log-format", "json")
    assert done.returncode == 1
    objects = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON (no terminal here)
    assert objects, done.stderr
    for obj in objects:
        assert {"time", "level", "logger", "message"} <= obj.keys()
    detail = next(o for o in objects if "exception" in o)
    assert detail["level"] == "DEBUG" and detail["logger"] == "pasar"
    assert "ConfigError" in detail["exception"] and "is not initialised" in detail["exception"]


def test_in_json_mode_the_reason_a_command_fails_is_an_error_record(tmp_path: Path) -> None:
    done = pasar(tmp_path / "empty", "run", "--no-tor", "--log-format", "json")  # the default level, info
    assert done.returncode == 1
    objects = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(o["level"], o["logger"]) for o in objects] == [("ERROR", "pasar")], done.stderr
    assert objects[0]["message"].startswith("error: ") and "is not initialised" in objects[0]["message"]


def test_in_json_mode_warnings_and_a_crash_are_records(tmp_path: Path) -> None:
    code = (
        "import warnings; from node.cli.logs import setup_logging; setup_logging('info', 'json'); "
        "warnings.warn('an old setting'); raise RuntimeError('a bug')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env["PYTHONWARNINGS"] = "default"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    objects = [json.loads(line) for line in done.stderr.splitlines()]  # no plain text at all
    assert [o["level"] for o in objects] == ["WARNING", "CRITICAL"], done.stderr
    assert "an old setting" in objects[0]["message"] and objects[0]["logger"] == "py.warnings"
    assert "RuntimeError: a bug" in objects[1]["exception"]


def test_non_ascii_is_escaped_so_any_stream_encoding_keeps_the_line_valid() -> None:
    line = JsonFormatter().format(record("paid by \U0001f600 café"))
    assert line.isascii()
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="latin-1", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(record("paid by \U0001f600 café"))
    stream.flush()
    written = raw.getvalue().decode("latin-1")
    assert json.loads(written)["message"] == "paid by \U0001f600 café"


def test_a_record_whose_args_do_not_fit_still_gives_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(record("%d listings", "many"))
    assert capsys.readouterr().err == ""  # no "--- Logging error ---" dump
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["message"] == "%d listings" and obj["args"] == "('many',)" and "TypeError" in obj["format_error"]


def test_text_is_the_default(tmp_path: Path) -> None:
    done = pasar(tmp_path / "empty", "run", "--no-tor", "--log-level", "debug")
    assert done.returncode == 1
    assert " DEBUG pasar: the error in detail" in done.stderr
    assert not any(line.startswith("{") for line in done.stderr.splitlines())
