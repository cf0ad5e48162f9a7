from fissile.router.invoke import encode_request


def test_request_carries_metadata_and_drops_reserved_headers() -> None:
    data = encode_request(
        "hello",
        "POST",
        "/x?y=1",
        {"X-Fissile-Timeout": "999", "Content-Length": "5", "X-Mine": "a", "Evil": "a\r\nb: c"},
        b"hi",
        3.0,
        "abc",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /x?y=1 HTTP/1.1"
    assert "X-Mine: a" in lines
    assert "x-fissile-timeout: 3" in lines and "X-Fissile-Timeout: 999" not in lines
    assert "content-length: 2" in lines and "Content-Length: 5" not in lines
    assert not any(line.startswith("Evil") for line in lines)
    assert "host: fissile" in lines
    assert body == b"hi"
