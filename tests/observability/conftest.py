"""The live fleet and Prometheus fixtures (tests/observability/live.py)."""

from tests.observability.live import fleet, prometheus

__all__ = ["fleet", "prometheus"]
