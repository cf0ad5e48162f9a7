"""Cluster mode (docs/cluster.md), three nodes on this machine sharing one PostgreSQL schema and
NATS, plus one single-node platform on SQLite, all in one run:

* change propagation: a function and its route created through node 1's API, then the time
  until node 3's router first answers 200 (node 3 fetches the build and cold-starts);
* forwarding: sequential warm requests through the router holding the function's one instance
  (``max_scale`` 1) vs through a router that forwards them to it;
* control-plane operations through the API (create, get, update, delete a function) on
  PostgreSQL (node 1) vs SQLite.

PostgreSQL: $FISSILE_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test), in a
schema of its own dropped at the end; NATS: $FISSILE_BENCH_NATS (default nats://127.0.0.1:4222).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Platform, Workdir, log, machine_info, ratio, summarize, write_results

PG = os.environ.get("FISSILE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("FISSILE_BENCH_NATS", "nats://127.0.0.1:4222")

HELLO = 'def main():\n    return "hello"\n'


def timed(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def node(root: Path, name: str, store: str, token: str) -> Platform:
    data = root / name / "data"
    data.mkdir(parents=True)
    (data / "api-token").write_text(token + "\n")
    (data / "api-token").chmod(0o600)
    platform = Platform(root / name)
    platform.extra_args = (
        "--cluster",
        "--store", store,
        "--nats", NATS,
        "--node-name", name,
        "--advertise", f"127.0.0.1:{platform.port}",
        "--secrets-key-file", str(root / "secrets.key"),
    )  # fmt: skip
    return platform


def wait_joined(nodes: list[Platform], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listed = nodes[0].client._json("GET", "/v1/nodes")
        if sum(1 for n in listed if n["state"] == "active") == len(nodes):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not joined after {timeout}s: {listed}")
        time.sleep(0.1)


def propagation(first: Platform, third: Platform, trials: int) -> list[float]:
    samples = []
    with httpx.Client(timeout=30) as http:
        for i in range(trials):
            name = f"prop{i}"
            first.create_function(name, HELLO.replace("hello", f"hello {i}"), route=f"/{name}")
            created = time.perf_counter()
            deadline = time.monotonic() + 60
            while http.get(f"http://127.0.0.1:{third.port}/{name}").status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"/{name} not served by node 3 after 60 s")
                time.sleep(0.002)
            samples.append((time.perf_counter() - created) * 1e3)
            log(f"propagation {i}: {samples[-1]:.1f} ms")
    return samples


def forwarding(first: Platform, second: Platform, n: int) -> dict[str, list[float]]:
    first.create_function("fwd", HELLO, route="/fwd", max_scale=1)
    local_url = f"http://127.0.0.1:{first.port}/fwd"
    remote_url = f"http://127.0.0.1:{second.port}/fwd"
    with httpx.Client(timeout=30) as local, httpx.Client(timeout=30) as remote:
        assert local.get(local_url).status_code == 200  # the one instance, on node 1
        # Until node 2's heartbeat view shows node 1's instance: then it forwards.
        deadline = time.monotonic() + 30
        while remote.get(remote_url).headers.get("x-fissile-node") != first_name(first):
            if time.monotonic() > deadline:
                raise TimeoutError("node 2 does not forward /fwd to node 1")
            time.sleep(0.05)
        samples: dict[str, list[float]] = {"local": [], "forwarded": []}
        for _ in range(n):  # interleaved: both see the same background load
            for kind, client, url in (
                ("local", local, local_url),
                ("forwarded", remote, remote_url),
            ):
                start = time.perf_counter()
                response = client.get(url)
                samples[kind].append((time.perf_counter() - start) * 1e3)
                assert response.status_code == 200, response.text
    return samples


def first_name(platform: Platform) -> str:
    return platform.extra_args[platform.extra_args.index("--node-name") + 1]


def control_plane(platform: Platform, n: int, tag: str) -> dict[str, list[float]]:
    client = platform.client
    platform.create_function(f"cp-{tag}", HELLO)
    package = f"cp-{tag}-pkg"
    counter = iter(range(10**9))
    names: list[str] = []

    def create() -> None:
        names.append(f"op-{tag}-{next(counter)}")
        client.create("functions", {"name": names[-1], "env": "python", "package": package})

    def update() -> None:
        body = {"name": names[0], "env": "python", "package": package}
        client.update("functions", names[0], {**body, "max_scale": 2 + next(counter) % 5})

    out = {"create_ms": timed(create, n)}
    out["get_ms"] = timed(lambda: client.get("functions", names[0]), n)
    out["update_ms"] = timed(update, n)
    out["delete_ms"] = timed(lambda: client.delete("functions", names.pop()), n - 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20, help="propagation trials")
    parser.add_argument("--requests", type=int, default=500, help="warm requests per side")
    parser.add_argument("--ops", type=int, default=100, help="control-plane calls per kind")
    parser.add_argument("--output", help="where to write the JSON (default: results/cluster.json)")
    args = parser.parse_args()

    import psycopg

    before = machine_info()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = f"{PG}{'&' if '?' in PG else '?'}options={quote(f'-csearch_path={schema}')}"
    token = secrets.token_urlsafe(32)
    with (
        psycopg.connect(PG, autocommit=True, connect_timeout=5) as admin,
        Workdir("fissile-bench-cluster-") as root,
    ):
        admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
        started: list[Platform] = []
        try:
            nodes = [node(root, f"node{i}", store, token) for i in (1, 2, 3)]
            for platform in nodes:
                platform.start()
                started.append(platform)
            wait_joined(nodes)
            (root / "sqlite").mkdir()
            single = Platform(root / "sqlite")
            single.start()
            started.append(single)

            log("change propagation: node 1 -> node 3")
            propagated = propagation(nodes[0], nodes[2], args.trials)
            log("warm requests: local instance vs forwarded to a peer")
            forwarded = forwarding(nodes[0], nodes[1], args.requests)
            log("control-plane operations: PostgreSQL vs SQLite")
            on_pg = control_plane(nodes[0], args.ops, "pg")
            on_sqlite = control_plane(single, args.ops, "sqlite")
        finally:
            for platform in reversed(started):
                platform.stop()
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())

    local, remote = summarize(forwarded["local"]), summarize(forwarded["forwarded"])
    pg = {kind: summarize(samples) for kind, samples in on_pg.items()}
    lite = {kind: summarize(samples) for kind, samples in on_sqlite.items()}
    result = {
        "machine": before,
        "parameters": vars(args) | {"nodes": 3},
        "fissile": {
            "propagation_ms": summarize(propagated),
            "warm_local_ms": local,
            "warm_forwarded_ms": remote,
            "control_plane_postgresql_ms": pg,
        },
        "baselines": {"control_plane_sqlite_ms": lite},
        "ratios": {
            "forwarded_p50_over_local_p50": ratio(remote["p50"], local["p50"]),
            "forwarded_p99_over_local_p99": ratio(remote["p99"], local["p99"]),
            **{
                f"postgresql_over_sqlite_{kind.removesuffix('_ms')}_p50": ratio(
                    pg[kind]["p50"], lite[kind]["p50"]
                )
                for kind in pg
            },
        },
        "notes": [
            "propagation: from the route's creation returning on node 1 to node 3's first 200,"
            " polled every 2 ms; it includes node 3 fetching the build and a cold start.",
            "warm: sequential requests on keep-alive connections, local and forwarded"
            " interleaved; the forwarded ones cross node 2's router, then node 1's.",
            "control plane: API calls from one client, node 1 (PostgreSQL) vs a single node"
            " on SQLite in the same run.",
        ],
    }
    write_results("cluster", result, args.output)


if __name__ == "__main__":
    main()
