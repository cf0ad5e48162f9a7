"""Integration tests of the composition example: each function in a real instance subprocess
(``invoke_local``, ``local_instance``: the loader, the contract binding and the response
encoding of ``fissile up``), without a platform. The shop's calls to the catalog reach a real
catalog instance: its scripted reply forwards each call as the platform would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fissile.testing import Invocation, LocalInstance, invoke_local, local_instance, make_request

EXAMPLE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def catalog() -> Iterator[LocalInstance]:
    with local_instance(EXAMPLE / "catalog.py", function="catalog") as instance:
        yield instance


Forward = Callable[[Invocation], tuple[int, bytes, dict[str, str]]]


def through(catalog: LocalInstance) -> Forward:
    """A reply that hands the call to the catalog instance, with the method, path, query,
    headers and body the shop sent."""

    def forward(asked: Invocation) -> tuple[int, bytes, dict[str, str]]:
        answer = catalog.request(
            asked.method,
            asked.path,
            query=asked.query,
            headers=asked.headers,
            body=asked.body,
        )
        headers = {k: v for k, v in answer.headers if k != "content-length"}  # the socket's own
        return answer.status, answer.body, headers

    return forward


def test_the_catalog_in_an_instance() -> None:
    listed = invoke_local(EXAMPLE / "catalog.py", make_request("GET", "/items?max_price=350"))
    assert listed.status == 200 and listed.content_type == "application/json"
    assert [item["name"] for item in listed.json()] == ["pencil", "notebook"]


def test_the_shop_composes_calls_to_a_real_catalog(catalog: LocalInstance) -> None:
    with local_instance(
        EXAMPLE / "shop.py", function="shop", replies={"catalog": through(catalog)}
    ) as shop:
        item = shop.get("/shop/items/2", params={"id": "2"})
        assert item.json() == {"id": 2, "name": "notebook", "price": "3.50", "available": True}
        cheap = shop.get("/shop/items", query={"max_price": "200"})
        assert [found["name"] for found in cheap.json()] == ["pencil"]
        order = {"lines": [{"id": 1, "qty": 2}, {"id": 2, "qty": 2}]}
        made = shop.post("/shop/orders", json=order, headers={"x-request-id": "r-42"})
        assert made.status == 201, made.text
        assert made.json()["order"]["total"] == "9.40"
        assert made.json()["request_id"] == "r-42"  # there and back through the catalog
        sold_out = shop.post("/shop/orders", json={"lines": [{"id": 3, "qty": 1}]})
        assert sold_out.status == 409 and "mug" in sold_out.json()["error"]
        missing = shop.get("/shop/items/99", params={"id": "99"})
        assert (missing.status, missing.json()) == (404, {"error": "no item 99"})
        asked = [(call.method, call.path) for call in shop.invocations]
        assert asked == [
            ("GET", "/items/2"),
            ("GET", "/items"),
            ("POST", "/quotes"),
            ("POST", "/quotes"),
            ("GET", "/items/99"),
        ]
        assert "order r-42: 940 cents" in shop.output()
    assert "POST /quotes" in catalog.output()


def test_a_catalog_out_of_reach_is_the_shops_502() -> None:
    shop = invoke_local(EXAMPLE / "shop.py", make_request("GET", "/shop/items"), function="shop")
    assert (shop.status, shop.json()) == (502, {"error": "the catalog could not answer (404)"})
