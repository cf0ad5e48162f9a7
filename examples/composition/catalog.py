"""The catalog: a small REST-style function that owns the items. It has no route of its own:
only other functions call it, through ``context.invoke``, so it sees the paths they ask for
(``/items/1``), as a route would hand them over.

- ``GET /items[?max_price=CENTS]``: the items, cheapest first;
- ``GET /items/<id>``: one item, or 404;
- ``POST /quotes`` with ``{"lines": [{"id": 1, "qty": 2}, ...]}``: the price of those lines,
  422 for a malformed order or an unknown item, 409 when there is not enough in stock.

A request's ``x-request-id`` header comes back on the answer, so a caller can follow one order
through every function it touched.
"""

from typing import Any

# The catalogue is data shipped with the code: the function keeps no state between calls.
ITEMS: dict[int, dict[str, Any]] = {
    1: {"id": 1, "name": "pencil", "price_cents": 120, "stock": 40},
    2: {"id": 2, "name": "notebook", "price_cents": 350, "stock": 12},
    3: {"id": 3, "name": "mug", "price_cents": 900, "stock": 0},
}


def main(request, context):
    parts = [part for part in request.path.split("/") if part]
    request_id = request.headers.get("x-request-id")
    echo = {"x-request-id": request_id} if request_id else {}
    context.logger.info("%s %s", request.method, request.path)
    if parts == ["items"]:
        answer = _allow(request, "GET") or _list(request)
    elif len(parts) == 2 and parts[0] == "items":
        answer = _allow(request, "GET") or _one(parts[1])
    elif parts == ["quotes"]:
        answer = _allow(request, "POST") or _quote(request)
    else:
        answer = _error(404, f"no resource {request.path}")
    body, status, *headers = answer
    return body, status, {**(headers[0] if headers else {}), **echo}


def _allow(request, method):
    if request.method != method:
        return _error(405, f"{request.method} is not allowed on {request.path}", {"allow": method})
    return None


def _list(request):
    items = sorted(ITEMS.values(), key=lambda item: item["price_cents"])
    limit = request.query.get("max_price")
    if limit is not None:
        if not limit.isdigit():
            return _error(400, f"max_price must be a whole number of cents, not {limit!r}")
        items = [item for item in items if item["price_cents"] <= int(limit)]
    return items, 200


def _one(ident):
    item = ITEMS.get(int(ident)) if ident.isdigit() else None
    if item is None:
        return _error(404, f"no item {ident}")
    return item, 200


def _quote(request):
    try:
        order = request.json()
    except ValueError:
        return _error(422, "the order must be JSON")
    lines = order.get("lines") if isinstance(order, dict) else None
    if not isinstance(lines, list) or not lines:
        return _error(422, 'an order is {"lines": [{"id": ..., "qty": ...}, ...]}')
    quoted = []
    for line in lines:
        ident = line.get("id") if isinstance(line, dict) else None
        qty = line.get("qty") if isinstance(line, dict) else None
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            return _error(422, f"qty of item {ident} must be a whole number above 0")
        item = ITEMS.get(ident) if isinstance(ident, int) else None
        if item is None:
            return _error(422, f"no item {ident}")
        if qty > item["stock"]:
            return _error(409, f"only {item['stock']} {item['name']} left, {qty} asked for")
        quoted.append(
            {"id": ident, "name": item["name"], "qty": qty, "cents": qty * item["price_cents"]}
        )
    return {"lines": quoted, "total_cents": sum(line["cents"] for line in quoted)}, 200


def _error(status, message, headers=None):
    return {"error": message}, status, headers or {}
