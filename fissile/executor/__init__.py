"""Pools, instances, the zygote client and the executor that ties them together."""

from fissile.executor.errors import ExecutorError, FunctionNotFound
from fissile.executor.executor import Executor
from fissile.executor.instance import Instance

__all__ = ["Executor", "ExecutorError", "FunctionNotFound", "Instance"]
