"""fissile/cli/_output.py: tables for people, JSON and YAML for scripts."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from fissile.cli._output import Column, emit, output_option

COLUMNS: list[Column] = [
    ("NAME", lambda r: r["name"]),
    ("METHODS", lambda r: r.get("methods")),
    ("ENV", lambda r: r.get("env")),
]

ROWS = [
    {"name": "hello", "methods": ["GET", "POST"], "env": {"A": "1", "B": "2"}},
    {"name": "a-much-longer-name", "methods": [], "env": None},
]


def run_emit(data: Any, output: str) -> str:
    @click.command()
    @output_option
    def show(output: str) -> None:
        emit(data, output, COLUMNS)

    result = CliRunner().invoke(show, ["-o", output])
    assert result.exit_code == 0, result.output
    return result.output


def test_json() -> None:
    assert json.loads(run_emit(ROWS, "json")) == ROWS
    assert json.loads(run_emit(ROWS[0], "json")) == ROWS[0]


def test_json_handles_non_json_values() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 1, 2, tzinfo=UTC)
    assert json.loads(run_emit({"name": "x", "at": when}, "json")) == {"name": "x", "at": str(when)}


def test_yaml() -> None:
    assert yaml.safe_load(run_emit(ROWS, "yaml")) == ROWS
    text = run_emit(ROWS[0], "yaml")
    assert text.splitlines()[0] == "name: hello"  # keys keep their order


def test_table() -> None:
    lines = run_emit(ROWS, "table").splitlines()
    assert lines == [
        "NAME                METHODS   ENV",
        "hello               GET,POST  A=1,B=2",
        "a-much-longer-name  -         -",
    ]


def test_table_of_one_record_and_of_none() -> None:
    assert run_emit(ROWS[0], "table").splitlines()[1].split() == ["hello", "GET,POST", "A=1,B=2"]
    assert run_emit([], "table").splitlines() == ["NAME  METHODS  ENV"]


def test_table_never_truncates() -> None:
    name = "x" * 63
    assert name in run_emit([{"name": name}], "table")


def test_unknown_format_is_a_usage_error() -> None:
    @click.command()
    @output_option
    def show(output: str) -> None:
        emit([], output, COLUMNS)

    result = CliRunner().invoke(show, ["-o", "xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of 'table', 'json', 'yaml'" in result.output


@pytest.mark.parametrize("output", ["json", "yaml", "table"])
def test_every_format_ends_with_a_newline(output: str) -> None:
    assert run_emit(ROWS, output).endswith("\n")
