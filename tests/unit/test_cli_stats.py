from typing import Any

from fissile.cli.stats import _screen, ms, node_table, per_second, top_table


def stats(name: str, rate: float, requests: int, **fields: Any) -> dict[str, Any]:
    return {
        "function": name,
        "rate": rate,
        "requests": requests,
        "error_rate": fields.get("error_rate", 0.0),
        "p50_ms": fields.get("p50_ms"),
        "p99_ms": fields.get("p99_ms"),
        "instances": {"ready": 1, "busy": 0},
        "cold_starts": 0,
        "queued": 0,
        "crashes": fields.get("crashes", 0),
    }


def test_top_puts_the_busiest_first_with_numbers_aligned_right() -> None:
    lines = top_table(
        [
            stats("quiet", 0.0, 0),
            stats("busy", 120.5, 7230, error_rate=0.0125, p50_ms=0.8, p99_ms=12.3),
            stats("alpha", 0.0, 0),
        ]
    )
    assert lines[0].split() == [
        "FUNCTION", "REQ/S", "REQS", "ERR%", "P50", "P99", "WARM", "BUSY", "COLD", "QUEUE",
        "CRASHES",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["busy", "alpha", "quiet"]
    assert lines[1].split()[1:6] == ["120.5", "7230", "1.2", "0.80ms", "12ms"]
    assert lines[2].split()[4:6] == ["-", "-"]
    # Right-aligned: every row's REQS ends where its header does.
    end = lines[0].index("REQS") + len("REQS")
    assert all(line[:end].endswith(("REQS", "7230", " 0")) for line in lines)


def test_durations_and_rates_are_short() -> None:
    assert [ms(v) for v in (None, 0.5, 15.2, 1500)] == ["-", "0.50ms", "15ms", "1.50s"]
    assert [per_second(v) for v in (0, 0.083, 12.34)] == ["0.0", "0.08", "12.3"]


class _Client:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str | None]] = []

    def stats(self, since: str, node: str | None = None) -> dict[str, Any]:
        self.asked.append((since, node))
        return self.answer


def test_top_in_a_cluster_counts_the_nodes_and_names_a_silent_one() -> None:
    answer = {
        "functions": [stats("busy", 2.0, 120)],
        "nodes": ["n1", "n2"],
        "warnings": [{"warning": "node n3 did not answer (timed out)", "node": "n3"}],
    }
    client = _Client(answer)
    lines = _screen(client, "1m", None, None)  # type: ignore[arg-type]
    assert "1 function on 2 nodes, last 1m" in lines[0]
    assert lines[1] == "warning: node n3 did not answer (timed out)"
    assert lines[3].split()[0] == "FUNCTION"
    lines = _screen(client, "1m", None, "n2")  # type: ignore[arg-type]
    assert "1 function on node n2" in lines[0]
    assert client.asked[-1] == ("1m", "n2")
    # A single node's answer has no nodes: the header is as it always was.
    lines = _screen(_Client({"functions": []}), "1m", None, None)  # type: ignore[arg-type]
    assert lines[0].endswith("0 functions, last 1m") and lines[-1] == "no functions"


def test_fn_stats_lists_each_nodes_share() -> None:
    share = {"rate": 1.5, "errors": 1, "p50_ms": 2.0, "p99_ms": 40.0, "queued": 0}
    lines = node_table(
        [
            {**share, "node": "n1", "requests": 90, "instances": {"ready": 2, "busy": 1}},
            {**share, "node": "node-two", "requests": 7, "instances": {"ready": 1, "busy": 0}},
        ]
    )
    assert lines[0].split() == [
        "NODE", "REQ/S", "REQS", "ERRORS", "P50", "P99", "READY", "BUSY", "QUEUE",
    ]  # fmt: skip
    assert lines[1].split() == ["n1", "1.50", "90", "1", "2.00ms", "40ms", "2", "1", "0"]
    assert lines[2].split()[:3] == ["node-two", "1.50", "7"]
    assert lines[1].index("90") + 2 == lines[0].index("REQS") + 4  # numbers aligned right
