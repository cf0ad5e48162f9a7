"""Asynchronous invocations: durable queue, records, workers, retries, dead letters, push."""

from fissile.invocations.callbacks import CallbackSender
from fissile.invocations.errors import InvocationError
from fissile.invocations.records import FINAL, Invocation, Response, Status
from fissile.invocations.service import Invocations
from fissile.invocations.store import InvocationStore

__all__ = [
    "FINAL",
    "CallbackSender",
    "Invocation",
    "InvocationError",
    "InvocationStore",
    "Invocations",
    "Response",
    "Status",
]
