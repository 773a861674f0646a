"""The README's reference tables are the ones the code prints: a drifted row fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.reference import commands_table, event_types_table, metrics_table
from streams.settings import settings_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(
    "table",
    [settings_table, metrics_table, event_types_table, commands_table],
    ids=lambda table: table.__name__,
)
def test_the_readme_table_is_the_generated_one(table: object) -> None:
    made = table()  # type: ignore[operator]
    assert made in README, f"README's {table.__name__} is stale: regenerate it from streams.reference"  # type: ignore[attr-defined]


def test_the_readme_links_to_docs_that_exist() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("architecture", "policy", "delivery", "model", "operations", "benchmarks"):
        assert f"docs/{name}.md" in README
        assert (root / "docs" / f"{name}.md").is_file()
