"""The operator's caps on what one function may ask for (``fissile up --max-memory``,
``--max-cpu``, ``--max-scale-limit``, ``--max-timeout``): a request above one is refused with 422
naming the cap, before anything is stored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fissile._units import format_duration, format_memory
from fissile.controlplane.errors import ApiError
from fissile.models import FunctionSpec

DEFAULT_MAX_SCALE = 100
DEFAULT_MAX_TIMEOUT = 3600.0


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Caps:
    memory: int
    cpu: float
    scale: int
    timeout: float

    @classmethod
    def of_host(
        cls,
        memory: int | None = None,
        cpu: float | None = None,
        scale: int | None = None,
        timeout: float | None = None,
    ) -> Caps:
        """The given caps, the rest derived from this host: all its memory, all its cores,
        100 instances, an hour."""
        return cls(
            memory=memory if memory is not None else host_memory(),
            cpu=cpu if cpu is not None else float(host_cpus()),
            scale=scale if scale is not None else DEFAULT_MAX_SCALE,
            timeout=timeout if timeout is not None else DEFAULT_MAX_TIMEOUT,
        )

    def fit(self, spec: FunctionSpec) -> FunctionSpec:
        """``spec`` with the limits it leaves unset lowered to the caps (a default above a cap
        is no request of the tenant's), then checked: what it does set must be within them."""
        unset: dict[str, float] = {
            name: cap
            for name, cap in (("memory", self.memory), ("max_scale", self.scale))
            if name not in spec.model_fields_set and getattr(spec, name) > cap
        }
        if "timeout" not in spec.model_fields_set and spec.timeout > self.timeout:
            unset["timeout"] = self.timeout
        if unset:
            spec = spec.model_copy(update=unset)
        self.check(spec)
        return spec

    def check(self, spec: FunctionSpec) -> None:
        """Raise a 422 naming every cap ``spec`` is above."""
        fields: list[dict[str, Any]] = []

        def over(path: str, asked: str, cap: str, option: str) -> None:
            fields.append(
                {"path": path, "message": f"{asked} is above the cap of {cap} ({option})"}
            )

        if spec.memory > self.memory:
            over("memory", _memory(spec.memory), _memory(self.memory), "--max-memory")
        if spec.cpu is not None and spec.cpu > self.cpu:
            over("cpu", f"{spec.cpu:g}", f"{self.cpu:g}", "--max-cpu")
        if spec.max_scale > self.scale:
            over("max_scale", str(spec.max_scale), str(self.scale), "--max-scale-limit")
        if spec.timeout > self.timeout:
            over(
                "timeout",
                format_duration(spec.timeout),
                format_duration(self.timeout),
                "--max-timeout",
            )
        if fields:
            summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
            raise ApiError(422, "over_cap", f"over this platform's caps: {summary}", fields)


def _memory(amount: int) -> str:
    exact = format_memory(amount)
    if exact.endswith(("Gi", "Mi")):
        return exact
    return f"{amount / 2**30:.1f}Gi" if amount >= 2**30 else f"{amount / 2**20:.1f}Mi"
