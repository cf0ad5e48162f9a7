"""The store on SQLite vs PostgreSQL, in one run: how long each call holds the event loop
(the protocol is synchronous: docs/architecture.md), and how soon a change made by one
PostgreSQL store reaches another's subscribers (LISTEN/NOTIFY, docs/cluster.md).

PostgreSQL: $FISSILE_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test); the
benchmark works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import log, machine_info, ratio, summarize, write_results

from fissile.store import Change, Store, open_store

PG = os.environ.get("FISSILE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def timed(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def operations(store: Store, n: int) -> dict[str, Any]:
    for i in range(100):
        store.create("functions", f"f{i:03}", {"name": f"f{i:03}", "memory": 128})
    counter = iter(range(10**9))
    return {
        "create_ms": summarize(
            timed(lambda: store.create("packages", f"p{next(counter)}", {"x": 1}), n)
        ),
        "update_ms": summarize(timed(lambda: store.update("functions", "f001", {"v": 1}), n)),
        "get_ms": summarize(timed(lambda: store.get("functions", "f050"), n)),
        "list_100_ms": summarize(timed(lambda: store.list("functions"), n)),
        "add_revision_ms": summarize(timed(lambda: store.add_revision("f001", "d", {}), n)),
    }


def propagation(url: str, n: int) -> dict[str, Any]:
    writer, follower = open_store(url), open_store(url)
    arrived: dict[int, float] = {}
    seen = threading.Condition()

    def on_change(change: Change) -> None:
        with seen:
            arrived[change.record.generation] = time.perf_counter()
            seen.notify_all()

    follower.subscribe(on_change)
    writer.create("functions", "hot", {})
    samples = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            generation = writer.update("functions", "hot", {}).generation
            with seen:
                if not seen.wait_for(lambda g=generation: g in arrived, timeout=10):
                    raise RuntimeError("a change did not arrive within 10 s")
            samples.append((arrived[generation] - start) * 1e3)
    finally:
        writer.close()
        follower.close()
    return {"write_to_other_store_subscriber_ms": summarize(samples)}


def propagation_on_loop(url: str, n: int) -> dict[str, Any]:
    """The same, with the follower opened in a running event loop (as ``fissile up`` does):
    its subscriber runs on the loop, after the loop re-read the row."""
    import asyncio

    async def run() -> list[float]:
        follower = open_store(url)
        writer = open_store(url)
        arrived: dict[int, float] = {}
        event = asyncio.Event()

        def on_change(change: Change) -> None:
            arrived[change.record.generation] = time.perf_counter()
            event.set()

        follower.subscribe(on_change)
        writer.create("functions", "loop", {})
        samples = []
        try:
            for _ in range(n):
                event.clear()
                start = time.perf_counter()
                # From another thread, as another node would: the loop stays free meanwhile.
                record = await asyncio.to_thread(writer.update, "functions", "loop", {})
                while record.generation not in arrived:
                    event.clear()
                    await asyncio.wait_for(event.wait(), 10)
                samples.append((arrived[record.generation] - start) * 1e3)
        finally:
            writer.close()
            follower.close()
        return samples

    return {"write_to_other_store_subscriber_on_loop_ms": summarize(asyncio.run(run()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="samples per operation")
    parser.add_argument("--output")
    args = parser.parse_args()

    import psycopg

    result: dict[str, Any] = {"machine": machine_info(), "parameters": {"n": args.n}}
    with tempfile.TemporaryDirectory() as tmp:
        log("sqlite")
        store = open_store(f"sqlite://{tmp}/fissile.db")
        result["sqlite"] = operations(store, args.n)
        store.close()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"'.encode())
        try:
            url = f"{PG}{'&' if '?' in PG else '?'}options={quote(f'-csearch_path={schema}')}"
            log("postgresql")
            store = open_store(url)
            result["postgresql"] = operations(store, args.n)
            store.close()
            log("propagation")
            result["postgresql"].update(propagation(url, args.n))
            result["postgresql"].update(propagation_on_loop(url, args.n))
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE'.encode())
    result["ratios_postgresql_over_sqlite_p50"] = {
        op: ratio(result["postgresql"][op]["p50"], result["sqlite"][op]["p50"])
        for op in result["sqlite"]
    }
    result["notes"] = (
        "Each figure is how long one synchronous store call takes, i.e. how long it holds the"
        " event loop. PostgreSQL reads come from the store's in-memory copy; its writes are one"
        " round trip over loopback. Propagation: from the writer's call to the other store's"
        " subscriber (LISTEN/NOTIFY, then a re-read of the row), without an event loop and with"
        " the follower on one (the writer in a thread, including the thread hop)."
    )
    write_results("store", result, args.output)


if __name__ == "__main__":
    main()
