"""Logs and metrics of functions and the platform."""

from fissile.observability.logs import LogBook
from fissile.observability.metrics import FunctionMetrics, Metrics

__all__ = ["FunctionMetrics", "LogBook", "Metrics"]
