"""Model bundles: a Keras model plus everything needed to use it correctly.

A bundle is a folder::

    bundle.json    feature spec (names, order, feature-code version), normalisation,
                   calibration, metrics, training-data description, version
    model.keras    the Keras model (loaded in safe mode: no Python code runs)

The version is a content hash, so the same model always has the same version. A
*registry* is a folder of bundles; loading a registry picks the newest bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retention_model.errors import BundleError, FeatureSpecMismatchError
from retention_model.features.definitions import (
    FEATURE_CODE_VERSION,
    FEATURE_NAMES,
    FORMULA_CHANGES,
    FORMULA_REVISION,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BundleMeta",
    "check_feature_spec",
    "normalise",
    "read_bundle_meta",
    "resolve_bundle",
    "write_bundle",
]

BUNDLE_FORMAT = 1
META_FILE = "bundle.json"
MODEL_FILE = "model.keras"
HOW_TO_BUILD = (
    "build one with `retention simulate --users 3000 --days 240 --out data/sim.jsonl` and "
    "`retention train --events data/sim.jsonl --registry registry/`, or point "
    "RETENTION_MODEL_PATH at an existing bundle"
)
HOW_TO_RETRAIN = "`retention train --events LOG --registry DIR`; the bundled model: `make model`"


@dataclass(frozen=True)
class BundleMeta:
    """The contents of ``bundle.json``."""

    version: str
    feature_code_version: str
    feature_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    created_at: str
    path: Path
    calibration: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    #: Formula revision of the feature code it was trained on (None: a bundle older
    #: than revision 3, which did not record it).
    formula_revision: int | None = None

    @property
    def model_file(self) -> Path:
        """Path of the Keras model file."""
        return self.path / MODEL_FILE

    @property
    def horizon_days(self) -> float:
        """The label horizon the risks are for: P(no purchase within it); 30 where the bundle does not say."""
        return float(self.training_data.get("horizon_days", 30))

    @property
    def max_silence_days(self) -> float | None:
        """Training left out rows of users silent longer than this (120 where the bundle does not say; None: none)."""
        days = (self.training_data.get("filters") or {}).get("max_silence_days", 120)
        return None if days is None else float(days)

    @property
    def test_figures(self) -> dict[str, float]:
        """The bundle's own test figures (``metrics.test``) that live quality reads against, where recorded."""
        test = self.metrics.get("test") or {}
        return {
            name: float(test[name]) for name in ("roc_auc", "brier", "ece") if isinstance(test.get(name), int | float)
        }


def normalise(matrix: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Signed log1p (tames counts and money), then z-score, as float32.

    Computed in float32 throughout (the model's input type): float64 ``log1p``
    made this step four times slower than the model call itself.
    """
    x = np.asarray(matrix, dtype=np.float32)
    out = np.log1p(np.abs(x))
    np.copysign(out, x, out=out)
    out -= np.asarray(mean, dtype=np.float32)
    out *= np.float32(1.0) / np.asarray(std, dtype=np.float32)
    return out


def resolve_bundle(path: str | Path) -> Path:
    """A bundle folder itself, or the newest bundle inside a registry folder.

    Folders whose names start with a dot are passed over: a bundle being written (our
    ``.staging-*`` folders, anyone's upload) is complete only once renamed into place, and
    a worker that loaded it mid-write, or from a path about to move, would miss the model.
    """
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if not path.exists():
        msg = f"model bundle not found at {path}: {HOW_TO_BUILD}"
        raise BundleError(msg)
    candidates: list[tuple[str, Path]] = []
    if path.is_dir():
        for child in path.iterdir():
            if child.name.startswith("."):
                continue
            meta_file = child / META_FILE
            if meta_file.is_file():
                try:
                    created = json.loads(meta_file.read_text())["created_at"]
                except (OSError, ValueError, KeyError):
                    continue
                candidates.append((created, child))
    if not candidates:
        msg = f"no model bundle in {path} (no {META_FILE} in it or its sub-folders): {HOW_TO_BUILD}"
        raise BundleError(msg)
    return max(candidates)[1]


def read_bundle_meta(path: str | Path) -> BundleMeta:
    """Read and validate ``bundle.json`` of a bundle or registry folder."""
    bundle_dir = resolve_bundle(path)
    meta_file = bundle_dir / META_FILE
    try:
        raw = json.loads(meta_file.read_text())
    except (OSError, ValueError) as exc:
        msg = f"cannot read {meta_file}: {exc}; {HOW_TO_BUILD}"
        raise BundleError(msg) from exc
    try:
        if raw["format"] != BUNDLE_FORMAT:
            msg = f"{meta_file} has bundle format {raw['format']}, this code reads {BUNDLE_FORMAT}"
            raise BundleError(msg)
        meta = BundleMeta(
            version=str(raw["version"]),
            feature_code_version=str(raw["feature_code_version"]),
            feature_names=tuple(raw["feature_names"]),
            mean=tuple(float(v) for v in raw["normalisation"]["mean"]),
            std=tuple(float(v) for v in raw["normalisation"]["std"]),
            created_at=str(raw["created_at"]),
            path=bundle_dir,
            calibration=raw.get("calibration"),
            metrics=raw.get("metrics", {}),
            training_data=raw.get("training_data", {}),
            extras=raw.get("extras", {}),
            formula_revision=int(raw["formula_revision"]) if "formula_revision" in raw else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{meta_file} is malformed ({type(exc).__name__}: {exc}); {HOW_TO_BUILD}"
        raise BundleError(msg) from exc
    if not meta.model_file.is_file():
        msg = f"bundle {bundle_dir} has no {MODEL_FILE}; {HOW_TO_BUILD}"
        raise BundleError(msg)
    return meta


def check_feature_spec(meta: BundleMeta) -> None:
    """Refuse a bundle trained on features the running code does not produce."""
    if meta.feature_names == FEATURE_NAMES and meta.feature_code_version == FEATURE_CODE_VERSION:
        return
    missing = [n for n in FEATURE_NAMES if n not in meta.feature_names]
    extra = [n for n in meta.feature_names if n not in FEATURE_NAMES]
    problems = []
    if meta.feature_code_version != FEATURE_CODE_VERSION:
        problem = f"feature code version {meta.feature_code_version!r} != running {FEATURE_CODE_VERSION!r}"
        changes = [
            f"revision {revision}: {text}"
            for revision, text in sorted(FORMULA_CHANGES.items())
            if meta.formula_revision is None or meta.formula_revision < revision <= FORMULA_REVISION
        ]
        if changes:
            trained = "an older revision" if meta.formula_revision is None else f"revision {meta.formula_revision}"
            problem += f" (it was trained on {trained}; since then {'; '.join(changes)})"
        problems.append(problem)
    if missing:
        problems.append(f"features the bundle lacks: {', '.join(missing)}")
    if extra:
        problems.append(f"features the code no longer has: {', '.join(extra)}")
    if not missing and not extra and meta.feature_names != FEATURE_NAMES:
        problems.append("same features in a different order")
    msg = (
        f"bundle {meta.path} does not match the running feature code: {'; '.join(problems)}. "
        f"Its inputs would mean something else: retrain it ({HOW_TO_RETRAIN})"
    )
    raise FeatureSpecMismatchError(msg)


def write_bundle(
    registry: str | Path,
    model: Any,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    created_at: str,
    calibration: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    extras: dict[str, Any] | None = None,
) -> Path:
    """Save a Keras model and its metadata as a new bundle in ``registry``, atomically.

    The bundle is written to a temporary folder and renamed into place, so a worker
    watching the registry never sees half a bundle.
    """
    registry = Path(registry)
    registry.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=registry))
    try:
        model.save(staging / MODEL_FILE)
        body: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "feature_code_version": FEATURE_CODE_VERSION,
            "formula_revision": FORMULA_REVISION,
            "feature_names": list(FEATURE_NAMES),
            "normalisation": {
                "transform": "signed_log1p_then_zscore",
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
            },
            "calibration": calibration,
            "metrics": metrics or {},
            "training_data": training_data or {},
            "extras": extras or {},
            "created_at": created_at,
        }
        digest = hashlib.sha256()
        digest.update((staging / MODEL_FILE).read_bytes())
        digest.update(json.dumps({k: v for k, v in body.items() if k != "created_at"}, sort_keys=True).encode())
        version = digest.hexdigest()[:12]
        body["version"] = version
        (staging / META_FILE).write_text(json.dumps(body, indent=1) + "\n")
        target = registry / f"churn-{version}"
        if target.exists():
            shutil.rmtree(staging)
            return target
        os.rename(staging, target)
        return target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
