"""cart: a shopping cart per user, kept either in the instance's memory or in Redis.

``CART_STORE`` chooses: ``memory`` (the default) keeps carts in a dict of this instance, so a
new instance (a second one under load, or one started after the last was reaped) starts with
every cart empty; ``redis://host:port/db`` keeps them in Redis, so any instance, now or later,
sees the same carts: the function itself is stateless. ``CART_PREFIX`` (default ``cart:``)
names the Redis keys.

    GET    /<route>/<user>          the cart: {"user": ..., "items": {sku: qty}, "store": ...}
    POST   /<route>/<user>          {"sku": "apple", "qty": 2} adds to it
    DELETE /<route>/<user>/<sku>    removes one line
    DELETE /<route>/<user>          empties it
"""

import os
import re

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class MemoryStore:
    kind = "memory"
    unavailable = ()  # the errors that mean the store cannot be reached: none here

    def __init__(self):
        self.carts = {}

    def items(self, user):
        return dict(self.carts.get(user, {}))

    def add(self, user, sku, qty):
        cart = self.carts.setdefault(user, {})
        cart[sku] = cart.get(sku, 0) + qty

    def remove(self, user, sku):
        return self.carts.get(user, {}).pop(sku, None) is not None

    def clear(self, user):
        self.carts.pop(user, None)


class RedisStore:
    """One hash per cart: ``HINCRBY`` adds atomically, whichever instance runs the call."""

    kind = "redis"

    def __init__(self, url, prefix):
        import redis  # only the Redis variant needs it (the package's requirements.txt)

        self.client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
        self.prefix = prefix
        self.unavailable = (redis.ConnectionError, redis.TimeoutError)

    def items(self, user):
        return {sku: int(qty) for sku, qty in self.client.hgetall(self.prefix + user).items()}

    def add(self, user, sku, qty):
        self.client.hincrby(self.prefix + user, sku, qty)

    def remove(self, user, sku):
        return bool(self.client.hdel(self.prefix + user, sku))

    def clear(self, user):
        self.client.delete(self.prefix + user)


def make_store():
    setting = os.environ.get("CART_STORE", "memory")
    if setting == "memory":
        return MemoryStore()
    if setting.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(setting, os.environ.get("CART_PREFIX", "cart:"))
    raise ValueError(f"CART_STORE must be 'memory' or a redis:// URL, not {setting!r}")


store = make_store()  # once per instance


def main(request, context):
    parts = [part for part in request.path.split("/") if part]
    # A route gives /<route>/<user>/..., a direct call /function/<name>/<user>/...
    parts = parts[2:] if parts[:2] == ["function", context.function] else parts[1:]
    if not parts or len(parts) > 2 or not all(NAME.match(part) for part in parts):
        return {"error": "expected /<user> or /<user>/<sku> (letters, digits, . _ -)"}, 404
    user = parts[0]
    try:
        return _handle(request, user, parts[1] if len(parts) == 2 else None)
    except store.unavailable as exc:
        context.logger.error("cart store unavailable: %s", exc)
        return {"error": f"the cart store is unavailable: {exc}"}, 503


def _handle(request, user, sku):
    if sku is not None:
        if request.method != "DELETE":
            return {"error": f"{request.method} is not allowed on a cart line"}, 405
        if not store.remove(user, sku):
            return {"error": f"{sku!r} is not in {user}'s cart"}, 404
        return _cart(user)
    if request.method == "GET":
        return _cart(user)
    if request.method == "DELETE":
        store.clear(user)
        return _cart(user)
    if request.method != "POST":
        return {"error": f"{request.method} is not allowed on a cart"}, 405
    try:
        body = request.json()
    except ValueError:
        return {"error": "the body is not JSON"}, 400
    line = body if isinstance(body, dict) else {}
    sku, qty = line.get("sku"), line.get("qty", 1)
    if not isinstance(sku, str) or not NAME.match(sku):
        return {"error": 'expected {"sku": "<name>", "qty": <1..99>}'}, 400
    if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 99:
        return {"error": f"qty must be an integer from 1 to 99, not {qty!r}"}, 400
    store.add(user, sku, qty)
    return _cart(user), 201


def _cart(user):
    return {"user": user, "items": store.items(user), "store": store.kind}
