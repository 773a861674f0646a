"""Pure core of the retention scorer: events, features, model and policy.

Nothing in this package imports Kafka, Faust or prometheus_client, so it can be
tested and benchmarked alone and reused by offline training.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
