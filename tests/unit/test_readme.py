"""The README's reference tables are the ones the code prints: a drifted row fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.reference import commands_table, event_types_table, metrics_table, settings_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()


@pytest.mark.parametrize(
    ("table", "where", "text"),
    [
        (settings_table, "docs/reference.md", REFERENCE),
        (metrics_table, "docs/reference.md", REFERENCE),
        (event_types_table, "README.md", README),
        (commands_table, "README.md", README),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_each_reference_table_is_the_generated_one(table: object, where: str, text: str) -> None:
    made = table()  # type: ignore[operator]
    assert made in text, f"{where}'s {table.__name__} is stale: regenerate it from the code"  # type: ignore[attr-defined]


def test_the_readme_links_to_docs_that_exist() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("architecture", "policy", "delivery", "model", "operations", "benchmarks", "reference"):
        assert f"docs/{name}.md" in README
        assert (root / "docs" / f"{name}.md").is_file()
