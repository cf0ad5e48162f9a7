"""System: both carts on a throw-away ``fissile up``; after their instances are reaped (5 idle
seconds, the spec's ``idle_timeout``), the in-memory cart is empty and the Redis one is not."""

from __future__ import annotations

import json
import uuid
from functools import partial

import pytest

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform, a build, and waiting for two reaps: ~25 s


def reaped(platform: Platform, function: str) -> bool:
    out = platform.cli("fn", "get", "--name", function, "-o", "json").out
    return bool(json.loads(out)["status"]["instances"] == 0)


def test_scale_to_zero_empties_the_memory_cart_not_the_redis_one(
    fissile_platform: Platform,
) -> None:
    user = f"ann-{uuid.uuid4().hex[:8]}"
    try:
        for variant in ("memory", "redis"):
            added = fissile_platform.post(f"/cart-{variant}/{user}", json={"sku": "tea", "qty": 3})
            assert added.status_code == 201, added.text
            cart = fissile_platform.get(f"/cart-{variant}/{user}").json()
            assert cart == {"user": user, "items": {"tea": 3}, "store": variant}

        for function in ("cart-memory", "cart-redis"):
            fissile_platform.wait_for(
                partial(reaped, fissile_platform, function),
                timeout=45,
                what=f"{function}'s instance reaped after 5 idle seconds",
            )

        # New instances now: the memory cart went with the old one, Redis kept its own.
        assert fissile_platform.get(f"/cart-memory/{user}").json()["items"] == {}
        assert fissile_platform.get(f"/cart-redis/{user}").json()["items"] == {"tea": 3}
    finally:
        fissile_platform.request("DELETE", f"/cart-redis/{user}")
