"""Unit tests of the composition example: each function called in the test's process with
``make_request`` and ``make_context``; the shop's calls to the catalog answered by scripted
replies and checked as recorded (method, path, query, headers, body)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fissile.testing import Invocation, call, make_context, make_request

EXAMPLE = Path(__file__).resolve().parents[1]
CATALOG = EXAMPLE / "catalog.py"
SHOP = EXAMPLE / "shop.py"

PENCIL = {"id": 1, "name": "pencil", "price_cents": 120, "stock": 40}
MUG = {"id": 3, "name": "mug", "price_cents": 900, "stock": 0}

# -- the catalog -------------------------------------------------------------------------


def test_the_catalog_lists_items_cheapest_first_and_filters_by_price() -> None:
    everything = call(CATALOG, make_request("GET", "/items"))
    assert everything.status == 200
    assert [item["name"] for item in everything.json()] == ["pencil", "notebook", "mug"]
    cheap = call(CATALOG, make_request("GET", "/items", query={"max_price": "400"}))
    assert [item["id"] for item in cheap.json()] == [1, 2]
    bad = call(CATALOG, make_request("GET", "/items?max_price=lots"))
    assert bad.status == 400 and "max_price" in bad.json()["error"]


def test_the_catalog_answers_one_item_or_404() -> None:
    assert call(CATALOG, make_request("GET", "/items/1")).json() == PENCIL
    missing = call(CATALOG, make_request("GET", "/items/99"))
    assert (missing.status, missing.json()) == (404, {"error": "no item 99"})
    assert call(CATALOG, make_request("GET", "/nowhere")).status == 404
    wrong = call(CATALOG, make_request("DELETE", "/items/1"))
    assert (wrong.status, wrong.header("allow")) == (405, "GET")


def test_the_catalog_quotes_an_order_and_echoes_the_request_id() -> None:
    order = {"lines": [{"id": 1, "qty": 3}, {"id": 2, "qty": 1}]}
    quote = call(
        CATALOG, make_request("POST", "/quotes", json=order, headers={"X-Request-Id": "r-1"})
    )
    assert quote.status == 200
    assert quote.json()["total_cents"] == 3 * 120 + 350
    assert quote.header("x-request-id") == "r-1"


def test_the_catalog_refuses_what_it_cannot_quote() -> None:
    cases = [
        ({"lines": [{"id": 3, "qty": 1}]}, 409, "only 0 mug left"),
        ({"lines": [{"id": 7, "qty": 1}]}, 422, "no item 7"),
        ({"lines": [{"id": 1, "qty": 0}]}, 422, "above 0"),
        ({"lines": []}, 422, "an order is"),
        ([1, 2], 422, "an order is"),
    ]
    for order, status, words in cases:
        refused = call(CATALOG, make_request("POST", "/quotes", json=order))
        assert refused.status == status, (order, refused.json())
        assert words in refused.json()["error"]
    not_json = call(CATALOG, make_request("POST", "/quotes", body="{"))
    assert not_json.status == 422


# -- the shop, with the catalog scripted -------------------------------------------------


def test_the_shop_asks_the_catalog_for_one_item_by_path() -> None:
    context = make_context("shop", replies={"GET catalog /items/3": MUG})
    answered = call(SHOP, make_request("GET", "/shop/items/3", params={"id": "3"}), context)
    assert answered.json() == {"id": 3, "name": "mug", "price": "9.00", "available": False}
    (asked,) = context.invocations
    assert (asked.function, asked.method, asked.path, asked.body) == (
        "catalog",
        "GET",
        "/items/3",
        b"",
    )


def test_the_shop_passes_the_query_on() -> None:
    context = make_context("shop", replies={"GET catalog /items": [PENCIL]})
    request = make_request("GET", "/shop/items", query={"max_price": "200"})
    assert call(SHOP, request, context).json() == [
        {"id": 1, "name": "pencil", "price": "1.20", "available": True}
    ]
    assert context.invocations[0].query == {"max_price": ["200"]}
    call(SHOP, make_request("GET", "/shop/items"), context)
    assert context.invocations[1].query == {}


def test_the_shop_orders_with_a_post_carrying_json_and_the_request_id() -> None:
    def quote(asked: Invocation) -> tuple[int, dict[str, Any], dict[str, str]]:
        lines = [{"id": 1, "name": "pencil", "qty": asked.json()["lines"][0]["qty"], "cents": 240}]
        return 200, {"lines": lines, "total_cents": 240}, asked.headers

    context = make_context("shop", invocation_id="inv-7", replies={"POST catalog /quotes": quote})
    order = {"lines": [{"id": 1, "qty": 2}]}
    made = call(SHOP, make_request("POST", "/shop/orders", json=order), context)
    assert made.status == 201
    assert made.json() == {
        "order": {"lines": [{"id": 1, "name": "pencil", "qty": 2, "cents": 240}], "total": "2.40"},
        "request_id": "inv-7",  # no x-request-id from the client: the invocation's id
    }
    (asked,) = context.invocations
    assert (asked.method, asked.path, asked.json()) == ("POST", "/quotes", order)
    assert asked.content_type == "application/json"
    assert asked.headers["x-request-id"] == "inv-7"
    assert "order inv-7: 240 cents" in context.messages

    headers = {"x-request-id": "client-1"}
    again = call(SHOP, make_request("POST", "/shop/orders", json=order, headers=headers), context)
    assert again.json()["request_id"] == "client-1"


def test_the_catalogs_refusals_pass_on_and_its_failures_are_a_bad_gateway() -> None:
    context = make_context(
        "shop",
        replies={
            "GET catalog /items/9": (404, {"error": "no item 9"}),
            "POST catalog /quotes": (409, {"error": "only 0 mug left, 1 asked for"}),
            "GET catalog /items/5": (500, {"error": {"code": "function_error"}}),
        },
    )
    missing = call(SHOP, make_request("GET", "/shop/items/9", params={"id": "9"}), context)
    assert (missing.status, missing.json()) == (404, {"error": "no item 9"})
    order = {"lines": [{"id": 3, "qty": 1}]}
    refused = call(SHOP, make_request("POST", "/shop/orders", json=order), context)
    assert refused.status == 409 and "mug" in refused.json()["error"]
    broken = call(SHOP, make_request("GET", "/shop/items/5", params={"id": "5"}), context)
    assert (broken.status, broken.json()) == (502, {"error": "the catalog could not answer (500)"})


def test_without_a_catalog_the_shop_answers_502_not_the_platforms_404() -> None:
    context = make_context("shop")  # nothing scripted: the platform's 404 function_not_found
    answered = call(SHOP, make_request("GET", "/shop/items"), context)
    assert (answered.status, answered.json()) == (
        502,
        {"error": "the catalog could not answer (404)"},
    )
