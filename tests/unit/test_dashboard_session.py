"""The dashboard's session cookie: derived from the token, good for reads and for a page's
invoke only (controlplane/auth.py)."""

from __future__ import annotations

from fissile.controlplane.auth import cookie_allows, same_origin, session_of, session_valid

TOKEN = "s3cret"
PAGE = {"host": "127.0.0.1:8081", "origin": "http://127.0.0.1:8081", "x-fissile-csrf": "1"}
INVOKE = "/v1/functions/hello/invoke"


def allows(method: str, path: str, headers: dict[str, str], cookie: str | None = None) -> bool:
    return cookie_allows(
        method, path, headers, session_of(TOKEN) if cookie is None else cookie, "http", TOKEN
    )


def test_the_session_is_derived_from_the_token_and_is_not_it() -> None:
    session = session_of(TOKEN)
    assert session != TOKEN and TOKEN not in session
    assert session_valid(session, TOKEN)
    assert not session_valid(session, "another token")
    assert not session_valid(None, TOKEN) and not session_valid("", TOKEN)


def test_the_cookie_reads_anything() -> None:
    assert allows("GET", "/v1/stats", {})
    assert allows("HEAD", "/v1/functions", {})
    assert not allows("GET", "/v1/stats", {}, cookie="forged")


def test_the_cookie_writes_only_a_page_s_invoke() -> None:
    assert allows("POST", INVOKE, PAGE)
    assert not allows("POST", INVOKE, {**PAGE, "x-fissile-csrf": "0"})
    assert not allows("POST", INVOKE, {k: v for k, v in PAGE.items() if k != "x-fissile-csrf"})
    assert not allows("POST", INVOKE, {k: v for k, v in PAGE.items() if k != "origin"})
    assert not allows("POST", INVOKE, {**PAGE, "origin": "http://evil.example"})
    assert not allows("POST", INVOKE, {**PAGE, "origin": "null"})
    assert not allows("POST", "/v1/functions", PAGE)
    assert not allows("DELETE", "/v1/functions/hello", PAGE)
    assert not allows("PUT", INVOKE, PAGE)
    assert not allows("POST", "/v1/functions/a/b/invoke", PAGE)


def test_same_origin_compares_scheme_host_and_port() -> None:
    headers = {"host": "localhost:8081", "origin": "http://localhost:8081"}
    assert same_origin(headers, "http")
    assert not same_origin(headers, "https")
    assert not same_origin({**headers, "origin": "http://localhost:8082"}, "http")
    assert not same_origin({"host": "localhost:8081"}, "http")
