"""fissile/controlplane/caps.py: the operator's caps on a function's limits."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fissile.controlplane.caps import DEFAULT_MAX_SCALE, DEFAULT_MAX_TIMEOUT, Caps
from fissile.controlplane.errors import ApiError
from fissile.models import FunctionSpec


def spec(**fields: Any) -> FunctionSpec:
    return FunctionSpec.model_validate({"name": "f", "env": "python", "package": "p", **fields})


def test_defaults_come_from_the_host() -> None:
    caps = Caps.of_host()
    assert caps.memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert caps.cpu == len(os.sched_getaffinity(0))
    assert (caps.scale, caps.timeout) == (DEFAULT_MAX_SCALE, DEFAULT_MAX_TIMEOUT) == (100, 3600)
    assert Caps.of_host(memory=2**30, timeout=60).memory == 2**30


def test_within_the_caps_passes() -> None:
    caps = Caps(memory=2**30, cpu=2, scale=10, timeout=60)
    caps.check(spec(memory="1Gi", cpu=2, max_scale=10, timeout="60s"))
    caps.check(spec())  # the defaults: 256Mi, no cpu limit, 10 instances, 60s


def test_each_cap_exceeded_is_named() -> None:
    caps = Caps(memory=2**30, cpu=2, scale=10, timeout=60)
    with pytest.raises(ApiError) as raised:
        caps.check(spec(memory="512Gi", cpu=4, max_scale=1000, timeout="12h"))
    error = raised.value
    assert (error.status, error.code) == (422, "over_cap")
    assert error.fields == [
        {"path": "memory", "message": "512Gi is above the cap of 1Gi (--max-memory)"},
        {"path": "cpu", "message": "4 is above the cap of 2 (--max-cpu)"},
        {"path": "max_scale", "message": "1000 is above the cap of 10 (--max-scale-limit)"},
        {"path": "timeout", "message": "12h is above the cap of 1m (--max-timeout)"},
    ]
    assert error.message.startswith("over this platform's caps: memory: 512Gi is above")


def test_an_odd_host_memory_is_shown_rounded() -> None:
    caps = Caps(memory=16_000_000_000, cpu=2, scale=10, timeout=60)
    with pytest.raises(ApiError, match=r"above the cap of 14\.9Gi"):
        caps.check(spec(memory="16Gi"))


def test_unset_limits_are_lowered_to_the_caps_set_ones_are_checked() -> None:
    caps = Caps(memory=128 * 2**20, cpu=1, scale=5, timeout=30)
    fitted = caps.fit(spec())  # defaults 256Mi, 10 instances, 60s: all above
    assert (fitted.memory, fitted.max_scale, fitted.timeout) == (128 * 2**20, 5, 30)
    assert caps.fit(spec(max_scale=3)).max_scale == 3
    with pytest.raises(ApiError, match="--max-scale-limit"):
        caps.fit(spec(max_scale=10))  # asked for explicitly: refused, not lowered


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-timeout", "0s"], "must be more than 0s"),
        (["--max-memory", "8Mi"], "must be at least 16Mi"),
        (["--max-cpu", "0"], "not in the range x>0"),
        (["--max-scale-limit", "0"], "x>=1"),
    ],
)
def test_fissile_up_refuses_caps_no_function_could_meet(args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from fissile.cli.up import up

    result = CliRunner().invoke(up, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
