"""How a node's log lines are written: `log_format = "text"` (the default, for people) or
`"json"` (for log shippers): one JSON object per line, on stderr like the text lines.

A JSON line holds `ts` (UTC, RFC 3339 with milliseconds), `level`, `logger`, `message`, the
node's `node_id`, and `exc` (the traceback) when the record carries one. A message that is
itself a JSON object (the audit trail's lines on `ringkv.audit`, security/audit.py) is merged
into the line as fields rather than nested as a string, so that `jq 'select(.event=="admin")'`
finds every admin action. Field names a message would overwrite (`ts`, `level`, ...) keep the
record's own values. A message is cut to `MAX_MESSAGE_CHARS`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_MESSAGE_CHARS = 16_384
_RESERVED = frozenset({"ts", "level", "logger", "message", "node_id", "exc"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON)."""

    def __init__(self, node_id: str = "") -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "..."
        seconds = int(record.created)
        line: dict = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.node_id:
            line["node_id"] = self.node_id
        fields = _json_object(message)
        if fields is None:
            line["message"] = message
        else:
            line["message"] = fields.get("event", "") if isinstance(fields.get("event"), str) else ""
            line.update({k: v for k, v in fields.items() if k not in _RESERVED})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _json_object(message: str) -> dict | None:
    if not (message.startswith("{") and message.endswith("}")):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def standalone_line(message: str, log_format: str, node_id: str = "", logger: str = "ringkv.node") -> str:
    """A line printed outside logging (the node's "ready" line) in the log's format."""
    if log_format != "json":
        return message
    record = logging.LogRecord(logger, logging.INFO, __file__, 0, message, None, None)
    return JsonFormatter(node_id).format(record)


def configure(level: str, log_format: str = "text", node_id: str = "") -> None:
    """Set up the root logger of a node process (server.run)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
