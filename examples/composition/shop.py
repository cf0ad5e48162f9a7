"""The shop: the public face, composed of calls to the catalog (``context.invoke`` by method,
path, query and headers). Its routes:

- ``GET /shop/items[?max_price=CENTS]``: the catalog's items, priced for people;
- ``GET /shop/items/{id}``: one item, whether it can be bought; the catalog's 404 passes on;
- ``POST /shop/orders``: the catalog quotes the order; the shop answers 201 with the order,
  or passes on the catalog's refusal (409 out of stock, 422 malformed) as it is.

When the catalog cannot answer (it crashed, timed out, is not deployed), the shop says so with
a 502 of its own instead of failing with it.
"""

CATALOG = "catalog"


def main(request, context):
    if request.path == "/shop/orders":
        return _order(request, context)
    if "id" in request.params:
        reply = context.invoke(CATALOG, method="GET", path=f"/items/{request.params['id']}")
        if reply.status != 200:
            return _passed_on(reply)
        return _priced(reply.json())
    query = {"max_price": request.query["max_price"]} if "max_price" in request.query else None
    reply = context.invoke(CATALOG, method="GET", path="/items", query=query)
    if reply.status != 200:
        return _passed_on(reply)
    return [_priced(item) for item in reply.json()]


def _order(request, context):
    # One id follows the order through every call: the client's, or this invocation's.
    request_id = request.headers.get("x-request-id") or context.invocation_id
    reply = context.invoke(
        CATALOG,
        method="POST",
        path="/quotes",
        json=request.json(),
        headers={"x-request-id": request_id},
    )
    if reply.status != 200:
        return _passed_on(reply)
    quote = reply.json()
    context.logger.info("order %s: %d cents", request_id, quote["total_cents"])
    order = {"lines": quote["lines"], "total": _money(quote["total_cents"])}
    return {"order": order, "request_id": reply.headers.get("x-request-id")}, 201


def _priced(item):
    return {
        "id": item["id"],
        "name": item["name"],
        "price": _money(item["price_cents"]),
        "available": item["stock"] > 0,
    }


def _money(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def _passed_on(reply):
    """The catalog's own refusal (a 4xx of its code: the client's mistake) as it is. The
    platform's answers (the catalog not deployed, overloaded, crashed or too slow: an error
    with a ``code``) and the catalog's failures are a bad gateway for the shop's client."""
    answer = None
    if 400 <= reply.status < 500 and reply.headers.get("content-type", "").startswith(
        "application/json"
    ):
        answer = reply.json()
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return answer, reply.status
    return {"error": f"the catalog could not answer ({reply.status})"}, 502
