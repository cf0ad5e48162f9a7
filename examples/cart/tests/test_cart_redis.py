"""Integration: the cart in real instances (``invoke_local``: each call a new instance, as a
scale-out or a recycle gives), in memory and on a real Redis; and Redis out of reach."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import cart
import pytest

from fissile.testing import call, invoke_local, make_context, make_request

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def in_a_new_instance(method: str, path: str, env: dict[str, str], **options: Any) -> Any:
    request = make_request(method, path, **options)
    result = invoke_local(FUNCTIONS, request, entrypoint="cart.main", env=env, function="cart")
    assert result.status < 400, result.text
    return result.json()["items"]


def test_memory_loses_the_cart_between_instances_redis_keeps_it(redis_url: str) -> None:
    user = f"ann-{uuid.uuid4().hex[:8]}"
    memory = {"CART_STORE": "memory"}
    shared = {"CART_STORE": redis_url, "CART_PREFIX": "cart-test:"}
    try:
        assert in_a_new_instance("POST", f"/c/{user}", memory, json={"sku": "apple"}) == {
            "apple": 1
        }
        assert in_a_new_instance("GET", f"/c/{user}", memory) == {}  # another instance: gone

        in_a_new_instance("POST", f"/c/{user}", shared, json={"sku": "apple", "qty": 2})
        assert in_a_new_instance("GET", f"/c/{user}", shared) == {"apple": 2}  # still there
    finally:
        in_a_new_instance("DELETE", f"/c/{user}", shared)


def test_redis_out_of_reach_is_a_503(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(cart, "store", cart.RedisStore(f"redis://127.0.0.1:{port}/0", "cart:"))
    context = make_context("cart-redis")
    result = call(cart.main, make_request("GET", "/c/ann"), context)
    assert result.status == 503
    assert result.json()["error"].startswith("the cart store is unavailable: Error 111")
    assert context.messages[0].startswith("cart store unavailable:")
