"""``retention dlq``: look at dead letters by reason, export them, re-publish fixed ones."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.kafka import client_config, read_topic
from streams.producer import produce_records
from streams.settings import Settings

__all__ = ["export_dead_letters", "read_dead_letters", "republish", "summarise"]


def read_dead_letters(settings: Settings, idle_s: float = 2.0) -> Iterator[dict[str, Any]]:
    """Every record of the dead-letter topic, from the beginning, as a JSON-ready dict."""
    for message in read_topic(client_config(settings), settings.dlq_topic, idle_s=idle_s):
        headers = {k: v.decode(errors="replace") for k, v in (message.headers() or [])}
        value = message.value() or b""
        try:
            text: str | None = value.decode()
        except UnicodeDecodeError:
            text = None
        yield {
            "reason": headers.get("retention.dlq.reason", "unknown"),
            "detail": headers.get("retention.dlq.detail", ""),
            "source": {
                "topic": headers.get("retention.dlq.topic"),
                "partition": int(headers.get("retention.dlq.partition", -1)),
                "offset": int(headers.get("retention.dlq.offset", -1)),
            },
            "truncated_from": int(headers["retention.dlq.truncated_from"])
            if "retention.dlq.truncated_from" in headers
            else None,
            "key": (message.key() or b"").decode(errors="replace"),
            "value": text,
            "value_base64": None if text is not None else base64.b64encode(value).decode(),
        }


def summarise(letters: list[dict[str, Any]]) -> str:
    """Counts by reason, with one example detail each."""
    counts = Counter(letter["reason"] for letter in letters)
    examples = {}
    for letter in letters:
        examples.setdefault(letter["reason"], letter["detail"])
    lines = [f"{len(letters)} dead letters"]
    for reason, count in counts.most_common():
        lines.append(f"  {count:8d}  {reason:24s}  e.g. {examples[reason][:80]}")
    return "\n".join(lines)


def export_dead_letters(letters: list[dict[str, Any]], path: Path) -> int:
    """Write one JSON object per line; fix ``value`` in place, then :func:`republish`."""
    with path.open("w") as handle:
        for letter in letters:
            handle.write(json.dumps(letter) + "\n")
    return len(letters)


def republish(settings: Settings, path: Path) -> int:
    """Produce each line's ``key`` and (fixed) ``value`` to the events topic; return how many.

    Lines whose value is still undecodable bytes (``value`` null) are refused, so an
    unfixed record is not sent back round the loop by accident.
    """
    records = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        letter = json.loads(line)
        if letter.get("value") is None:
            msg = f"{path}:{line_no}: value is not text (still the original bytes); fix it or delete the line"
            raise ValueError(msg)
        records.append((letter["key"].encode(), letter["value"].encode(), "valid"))
    produced = produce_records(settings, records)
    return sum(produced.values())
