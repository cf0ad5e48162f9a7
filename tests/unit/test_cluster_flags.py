"""``fissile up``'s cluster flags: what it refuses before starting anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fissile.cli.up import _cluster_options, up

PG = "postgresql://fissile@db:5432/fissile"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "--nats", "nats://n:4222"], "--cluster needs --store postgresql://"),
        (
            ["--cluster", "--store", "sqlite:///tmp/x.db", "--nats", "nats://n:4222"],
            "--cluster needs --store postgresql://",
        ),
        (["--cluster", "--store", PG], "--cluster needs --nats"),
        (["--cluster", "--store", PG, "--nats", "http://n:4222"], "must be a nats:// URL"),
        (["--nats", "nats://n:4222"], "need --cluster"),
        (["--node-name", "a"], "need --cluster"),
        (
            ["--cluster", "--store", PG, "--nats", "nats://n:4222", "--node-name", "no/slash"],
            "--node-name",
        ),
        (
            ["--cluster", "--store", PG, "--nats", "nats://n:4222", "--advertise", "nohost"],
            "must be HOST:PORT",
        ),
        (
            ["--cluster", "--store", PG, "--nats", "nats://n:4222", "--advertise", "h:99999"],
            "must be HOST:PORT",
        ),
    ],
)
def test_bad_cluster_flags_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(up, args, env={"FISSILE_NATS": "", "FISSILE_NODE_NAME": ""})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_advertised_address_defaults_to_the_router() -> None:
    name, address = _cluster_options(PG, "nats://n:4222", "n1", None, "10.0.0.5", 8080, None)
    assert (name, address) == ("n1", "10.0.0.5:8080")
    _, address = _cluster_options(PG, "nats://n:4222", "n1", None, "::1", 9000, None)
    assert address == "[::1]:9000"
    _, address = _cluster_options(
        PG, "nats://n:4222", "n1", "peer.example:8080", "0.0.0.0", 1, None
    )
    assert address == "peer.example:8080"
