"""Every exception class the project defines derives from RetentionError: one ``except`` catches them all."""

from __future__ import annotations

import ast
import importlib

from retention_model.errors import RetentionError
from tests.conftest import REPO

PACKAGES = ("retention_model", "streams", "training")


def _exception_classes() -> list[tuple[str, str]]:
    """(module, class) for each class whose base is an exception by name (…Error, …Exception)."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    found.append((module, node.name))
    return found


def test_every_exception_class_derives_from_retention_error() -> None:
    classes = _exception_classes()
    assert ("streams.compat", "UnsupportedFaustError") in classes  # the scan finds adapter errors too
    strays = [
        f"{module}.{name}"
        for module, name in classes
        if not issubclass(getattr(importlib.import_module(module), name), RetentionError)
    ]
    assert not strays, f"derive these from retention_model.errors.RetentionError: {strays}"


def test_exception_names_end_in_error() -> None:
    assert all(name.endswith("Error") for _, name in _exception_classes())
