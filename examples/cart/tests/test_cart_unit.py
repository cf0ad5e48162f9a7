"""Unit: the in-memory cart through the function object."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cart
import pytest

from fissile.testing import Result, call, make_context, make_request


@pytest.fixture(autouse=True)
def fresh_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cart, "store", cart.MemoryStore())
    yield


def send(method: str, path: str, **options: Any) -> Result:
    return call(cart.main, make_request(method, path, **options), make_context("cart-memory"))


def test_add_list_remove_clear() -> None:
    assert send("POST", "/cart-memory/ann", json={"sku": "apple", "qty": 2}).status == 201
    send("POST", "/cart-memory/ann", json={"sku": "apple"})
    send("POST", "/cart-memory/ann", json={"sku": "pear", "qty": 5})
    assert send("GET", "/cart-memory/ann").json() == {
        "user": "ann",
        "items": {"apple": 3, "pear": 5},
        "store": "memory",
    }
    assert send("DELETE", "/cart-memory/ann/pear").json()["items"] == {"apple": 3}
    assert send("GET", "/cart-memory/bob").json()["items"] == {}  # carts are per user
    assert send("DELETE", "/cart-memory/ann").json()["items"] == {}


def test_a_direct_call_addresses_the_same_cart() -> None:
    send("POST", "/cart-memory/ann", json={"sku": "fig"})
    assert send("GET", "/function/cart-memory/ann").json()["items"] == {"fig": 1}


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "error"),
    [
        ("POST", "/c/ann", {"json": {"qty": 1}}, 400, 'expected {"sku": "<name>"'),
        ("POST", "/c/ann", {"json": {"sku": "fig", "qty": 0}}, 400, "qty must be an integer"),
        ("POST", "/c/ann", {"body": "{"}, 400, "the body is not JSON"),
        ("PUT", "/c/ann", {}, 405, "PUT is not allowed on a cart"),
        ("GET", "/c/ann/fig", {}, 405, "GET is not allowed on a cart line"),
        ("DELETE", "/c/ann/fig", {}, 404, "'fig' is not in ann's cart"),
        ("GET", "/c", {}, 404, "expected /<user>"),
        ("GET", "/c/a b", {}, 404, "expected /<user>"),
    ],
)
def test_bad_requests(
    method: str, path: str, options: dict[str, Any], status: int, error: str
) -> None:
    result = send(method, path, **options)
    assert result.status == status
    assert result.json()["error"].startswith(error)


def test_a_bad_store_setting_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CART_STORE", "mysql://nowhere")
    with pytest.raises(ValueError, match="CART_STORE must be 'memory' or a redis:// URL"):
        cart.make_store()
