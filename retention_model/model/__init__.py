"""Model bundles and the Keras scoring wrapper."""

from __future__ import annotations

from retention_model.model.bundle import BundleMeta, read_bundle_meta, resolve_bundle, write_bundle
from retention_model.model.scorer import ChurnModel

__all__ = ["BundleMeta", "ChurnModel", "read_bundle_meta", "resolve_bundle", "write_bundle"]
