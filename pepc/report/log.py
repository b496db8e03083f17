"""Structured logging for long-running commands (`pepc watch`, `pepc events --follow`).

One logger, two renderings: human lines for a terminal or the journal, and
one JSON object per line (`ts`, `level`, `msg`, `fields`) for log shippers.
Call sites pass structured data as `fields`, never by formatting it into the
message, so both renderings carry the same information:

    log.info("applied", fields={"writes": 3, "generation": 1})
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

LOGGER_NAME = "pepc"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "fields": _fields(record),
        }
        if record.exc_info:
            obj["fields"]["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, separators=(",", ":"), ensure_ascii=False)


def _text_value(v: Any) -> str:
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int)) for x in v):
        v = ",".join(str(x) for x in v)  # reasons=start,change reads better than a JSON list
    s = v if isinstance(v, str) else json.dumps(v, default=str, separators=(",", ":"), ensure_ascii=False)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return json.dumps(s, ensure_ascii=False)
    return s


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000Z info  applied writes=3 generation=1` (logfmt-style fields)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso(record.created), f"{record.levelname.lower():<7}", record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(fmt: str = "text", level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Logger:
    """Configure the `pepc` logger (idempotent: replaces its handlers)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class FieldLogger:
    """`log.info(msg, fields={...})`: a thin front over a stdlib logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _log(self, level: int, msg: str, fields: dict[str, Any] | None, exc_info: bool) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, extra={"fields": fields or {}}, exc_info=exc_info)

    def debug(self, msg: str, fields: dict[str, Any] | None = None) -> None:
        self._log(logging.DEBUG, msg, fields, False)

    def info(self, msg: str, fields: dict[str, Any] | None = None) -> None:
        self._log(logging.INFO, msg, fields, False)

    def warning(self, msg: str, fields: dict[str, Any] | None = None) -> None:
        self._log(logging.WARNING, msg, fields, False)

    def error(self, msg: str, fields: dict[str, Any] | None = None, exc_info: bool = False) -> None:
        self._log(logging.ERROR, msg, fields, exc_info)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - mirrors logging
        return self.logger.isEnabledFor(level)


def get(name: str = "") -> FieldLogger:
    return FieldLogger(logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME))
