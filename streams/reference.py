"""The reference tables of the README and docs/reference.md, made from the code they describe.

A test holds each table in the docs equal to what these functions print, so a
new setting, metric, event type or command cannot go undocumented, and a stale
row cannot stay.
"""

from __future__ import annotations

import argparse
import dataclasses

from prometheus_client import CollectorRegistry

from streams.settings import SECRETS, Settings, allowed_values

__all__ = ["commands_table", "event_types_table", "metrics_table", "settings_table", "settings_text"]


def event_types_table() -> str:
    """Event types of schema v1 and what the worker does with each."""
    from retention_model.events import EVENT_TYPE_MEANINGS, EventType

    lines = ["| `type` | Means |", "|---|---|"]
    lines += [f"| `{kind.wire_name}` | {EVENT_TYPE_MEANINGS[kind]} |" for kind in EventType]
    return "\n".join(lines)


def metrics_table() -> str:
    """Every metric the worker exports: name, type, labels and meaning."""
    from streams.metrics import create

    registry = CollectorRegistry()
    create(registry)
    lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for collector in sorted(registry._collector_to_names, key=lambda c: registry._collector_to_names[c][0]):
        family = next(iter(collector.describe()))
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(f"`{label}`" for label in getattr(collector, "_labelnames", ()))
        lines.append(f"| `{name}` | {family.type} | {labels} | {family.documentation} |")
    return "\n".join(lines)


def _walk(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for action in parser._actions:  # argparse has no public way to list sub-commands
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            nested = _walk(sub, f"{prefix} {name}")
            if nested:
                rows += nested
            else:
                rows.append((f"{prefix} {name}", (helps.get(name) or "").replace("%%", "%")))
    return rows


def commands_table() -> str:
    """Every ``retention`` command with its one-line help (``--help`` on each gives the flags)."""
    from streams.cli import build_parser

    lines = ["| Command | What it does |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in _walk(build_parser(), "retention")]
    return "\n".join(lines)


def settings_table() -> str:
    """The settings table of docs/reference.md, in Markdown."""
    lines = ["| Environment variable | Flag | Default | Allowed | Meaning |", "|---|---|---|---|---|"]
    for spec in dataclasses.fields(Settings):
        default = spec.default if spec.name != "model_path" else "the bundled model"
        default = "" if spec.name in SECRETS else default
        flag = (
            f"`--{spec.name.replace('_', '-')}`"
            if spec.name not in SECRETS
            else f"none: or `RETENTION_{spec.name.upper()}_FILE`"
        )
        name, allowed, meaning = f"RETENTION_{spec.name.upper()}", allowed_values(spec), spec.metadata["help"]
        lines.append(f"| `{name}` | {flag} | `{default}` | {allowed} | {meaning} |")
    return "\n".join(lines)


def settings_text(width: int = 100) -> str:
    """The settings for a terminal: one block per setting, wrapped to ``width``."""
    import textwrap

    blocks = []
    for spec in dataclasses.fields(Settings):
        default = "the bundled model" if spec.name == "model_path" else spec.default
        flag = "(no flag: secret)" if spec.name in SECRETS else f"--{spec.name.replace('_', '-')}"
        head = f"RETENTION_{spec.name.upper()}  {flag}  default: {'' if spec.name in SECRETS else repr(default)}"
        body = f"{spec.metadata['help']}. Allowed: {allowed_values(spec)}."
        blocks.append(head + "\n" + textwrap.fill(body, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(blocks)
