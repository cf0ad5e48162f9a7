"""Unit level: the long task and the page as function objects, in the test's process."""

from pathlib import Path

import long_task
import pytest

from fissile.testing import call, call_contract, make_request

PAGE = Path(__file__).resolve().parent.parent / "page"


def test_count_primes() -> None:
    assert [long_task.count_primes(n) for n in (2, 3, 10, 1000)] == [0, 1, 4, 168]


def test_the_task_counts_and_takes_its_time() -> None:
    result = call(long_task.main, make_request("POST", "/", json={"limit": 100, "seconds": 0.2}))
    assert result.status == 200
    answer = result.json()
    assert answer["limit"] == 100 and answer["primes"] == 25
    assert answer["seconds"] >= 0.2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": "many"}, "limit must be an integer and seconds a number"),
        ({"limit": 1}, "limit must be within 2..2000000 and seconds within 0..10"),
        ({"limit": 10, "seconds": 11}, "limit must be within 2..2000000 and seconds within 0..10"),
    ],
)
def test_bad_options_are_a_400_with_the_reason(options: dict[str, object], message: str) -> None:
    result = call(long_task.main, make_request("POST", "/", json=options))
    assert (result.status, result.json()) == (400, {"error": message})


def test_the_page_is_served_as_html() -> None:
    result = call_contract(PAGE, make_request("GET", "/async-demo"), entrypoint="page.main")
    assert result.status == 200
    assert result.content_type == "text/html; charset=utf-8"
    assert 'fetch("/async-function/long-task"' in result.text
    assert "new WebSocket(accepted.ws_url)" in result.text
