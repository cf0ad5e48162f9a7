"""Choosing a function's contract: explicitly, from its environment, or detected (``auto``),
seen through the CLI and HTTP. Each platform's contract has its own module
(``test_contracts_*.py``)."""

from __future__ import annotations

from pathlib import Path

from syskit import Platform, error_of, wait_for, write

ZERO_ARGUMENTS = """
def main():
    return "hello from main()"
"""


def contract_of(platform: Platform, name: str) -> tuple[str | None, str | None]:
    function = platform.json_of("fn", "get", "--name", name)
    return function.get("contract"), function["status"].get("contract")


def test_auto_detects_and_fn_get_shows_the_contract_in_effect(
    platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "zero.py", ZERO_ARGUMENTS)
    platform.ok("fn", "create", "--name", "ct-auto", "--code", str(tmp_path / "zero.py"))
    response = platform.get("/function/ct-auto")
    assert (response.status_code, response.text) == (200, "hello from main()")
    assert contract_of(platform, "ct-auto") == (None, "fission")
    table = platform.ok("fn", "get", "--name", "ct-auto").out
    assert "Contract:      fission (the environment's)\n" in table, table


def test_an_explicit_contract_that_does_not_fit_fails_to_load_with_the_reason(
    platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "zero.py", ZERO_ARGUMENTS)
    platform.ok(
        "fn", "create", "--name", "ct-wrong", "--contract", "native",
        "--code", str(tmp_path / "zero.py"),
    )  # fmt: skip
    response = platform.get("/function/ct-wrong")
    assert response.status_code == 500, response.text
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "a native function is main(request)" in error["message"]
    # Setting the right one rolls the function: the next instance loads it.
    platform.ok("fn", "update", "--name", "ct-wrong", "--contract", "fission")
    wait_for(
        lambda: platform.get("/function/ct-wrong").status_code == 200,
        60,
        "the function to serve under its new contract",
    )
    assert contract_of(platform, "ct-wrong") == ("fission", "fission")


def test_functions_follow_their_environments_contract(platform: Platform, tmp_path: Path) -> None:
    platform.ok("env", "create", "--name", "ct-env", "--poolsize", "1", "--contract", "native")
    write(tmp_path / "zero.py", ZERO_ARGUMENTS)
    platform.ok(
        "fn", "create", "--name", "ct-follows", "--env", "ct-env",
        "--code", str(tmp_path / "zero.py"),
    )  # fmt: skip
    assert error_of(platform.get("/function/ct-follows"))["code"] == "load_failed"
    environment = platform.json_of("env", "get", "--name", "ct-env")
    assert environment["contract"] == "native"
    # A new environment contract rolls the functions that have none of their own.
    platform.ok("env", "update", "--name", "ct-env", "--contract", "auto")
    wait_for(
        lambda: platform.get("/function/ct-follows").status_code == 200,
        60,
        "the function to serve under its environment's new contract",
    )
    assert contract_of(platform, "ct-follows") == (None, "fission")


def test_a_return_value_fissile_cannot_send_is_500_invalid_response(
    platform: Platform, tmp_path: Path
) -> None:
    write(
        tmp_path / "opaque.py",
        """
        class Widget:
            pass

        def main(request):
            return Widget()
        """,
    )
    platform.ok("fn", "create", "--name", "ct-opaque", "--code", str(tmp_path / "opaque.py"))
    response = platform.get("/function/ct-opaque")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "invalid_response"
    assert "cannot encode a opaque.Widget as a response body" in error["message"]
    assert "object at 0x" not in response.text
    wait_for(
        lambda: (
            "cannot encode a opaque.Widget" in platform.ok("fn", "logs", "--name", "ct-opaque").out
        ),
        30,
        "the function's log to name the type",
    )
