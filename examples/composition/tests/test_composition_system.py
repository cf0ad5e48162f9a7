"""System tests of the composition example: its spec directory applied to a throw-away
``fissile up`` (the ``fissile_platform`` fixture of ``fissile.testing``), called through the
shop's routes as a client would, the calls to the catalog going through the platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform start and two functions' first calls: ~10 s

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.fixture(scope="module")
def shop(fissile_platform: Platform) -> Platform:
    fissile_platform.apply(SPECS)
    return fissile_platform


def test_a_client_sees_the_shop_composed_of_catalog_calls(shop: Platform) -> None:
    item = shop.get("/shop/items/1")
    assert item.status_code == 200, item.text
    assert item.json() == {"id": 1, "name": "pencil", "price": "1.20", "available": True}
    cheap = shop.get("/shop/items", params={"max_price": "400"})
    assert [found["name"] for found in cheap.json()] == ["pencil", "notebook"]
    order = {"lines": [{"id": 2, "qty": 3}]}
    made = shop.post("/shop/orders", json=order, headers={"x-request-id": "sys-1"})
    assert made.status_code == 201, made.text
    assert made.json() == {
        "order": {
            "lines": [{"id": 2, "name": "notebook", "qty": 3, "cents": 1050}],
            "total": "10.50",
        },
        "request_id": "sys-1",
    }


def test_the_catalogs_refusals_reach_the_client_with_their_status(shop: Platform) -> None:
    missing = shop.get("/shop/items/42")
    assert (missing.status_code, missing.json()) == (404, {"error": "no item 42"})
    sold_out = shop.post("/shop/orders", json={"lines": [{"id": 3, "qty": 1}]})
    assert sold_out.status_code == 409 and "only 0 mug left" in sold_out.json()["error"]
    malformed = shop.post("/shop/orders", json={"lines": "pencils"})
    assert malformed.status_code == 422
    # The route's constraint: not a number, not the shop's.
    assert shop.get("/shop/items/pencil").status_code == 404


def test_the_catalog_saw_the_paths_and_the_caller(shop: Platform) -> None:
    # The catalog has no route: it logs the route-relative paths the shop asked for.
    shop.get("/shop/items/2")

    def logged() -> str | None:
        text = shop.logs("catalog")
        return text if "GET /items/2" in text else None

    logs = shop.wait_for(logged, what="the catalog's log line for GET /items/2")
    assert logs is not None
    assert "/function/" not in logs
    # fn test goes through the shop's route, as a client would.
    tested = shop.cli("fn", "test", "--name", "shop", "--subpath", "/shop/items/3")
    assert '"available": false' in tested.out
