"""The embedded broker: durable topics in a SQLite file of the data dir, no server needed.

Each topic is an append-only log (a global sequence number orders it). A consumer group keeps a
cursor per topic and a table of *pending* deliveries: a message is moved from the log to the
pending table, in one transaction with the cursor's advance, when it is handed out, and deleted
from it when acked. Every subscription has an owner token; deliveries pending under another
owner (a subscription that ended or a process that was killed) are handed out again, marked
redelivered, before new messages. That is the whole of at-least-once here.

A new group starts at the oldest message the topic still holds, so nothing published before a
trigger existed is skipped. A message is kept until every group of its topic has acked it, and
at most ``RETENTION`` (a topic nobody consumes does not grow for ever); pruning runs at start
and every ``PRUNE_EVERY`` publishes. Writes use WAL with ``synchronous=NORMAL``: a killed
process loses nothing committed; only a power cut may lose the last transactions.

Calls are synchronous on the event loop: each is one short transaction (tens of microseconds).
Subscribers of the same broker object are woken by ``publish`` at once; other processes writing
the same file (a test reading a topic) are seen by polling every ``POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fissile.triggers.mq.base import BrokerError, Delivery, Message

POLL = 0.2
RETENTION = 7 * 24 * 3600.0
PRUNE_EVERY = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    published_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic, seq);
CREATE TABLE IF NOT EXISTS cursors (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    PRIMARY KEY (grp, topic)
);
CREATE TABLE IF NOT EXISTS pending (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    owner TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, seq)
);
"""


class EmbeddedBroker:
    mqtype = "embedded"

    def __init__(self, url: str) -> None:
        self.path = Path(url.removeprefix("sqlite://"))
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._wakeups: dict[str, set[asyncio.Event]] = {}
        self._published = 0

    async def start(self) -> None:
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BrokerError(f"embedded broker at {self.path}: {exc}") from None
        self._db = db
        self.prune()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise BrokerError("the embedded broker is not started")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        with self._lock:
            self.db.execute(
                "INSERT INTO messages (topic, body, headers, published_at) VALUES (?, ?, ?, ?)",
                (topic, body, json.dumps(dict(headers or {})), time.time()),
            )
        self._published += 1
        if self._published % PRUNE_EVERY == 0:
            self.prune()
        for event in self._wakeups.get(topic, ()):
            event.set()

    async def subscribe(self, topic: str, group: str) -> EmbeddedSubscription:
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO cursors (grp, topic, next_seq) VALUES (?, ?, 0)",
                (group, topic),
            )
        return EmbeddedSubscription(self, topic, group)

    def prune(self, now: float | None = None) -> int:
        """Delete messages every group of their topic has acked, and those older than
        ``RETENTION`` that no group holds unacked; returns how many went."""
        cutoff = (time.time() if now is None else now) - RETENTION
        with self._lock:
            consumed = self.db.execute(
                "DELETE FROM messages WHERE seq < (SELECT MIN(c.next_seq) FROM cursors c"
                " WHERE c.topic = messages.topic) AND seq NOT IN (SELECT seq FROM pending)"
            ).rowcount
            expired = self.db.execute(
                "DELETE FROM messages WHERE published_at < ?"
                " AND seq NOT IN (SELECT seq FROM pending)",
                (cutoff,),
            ).rowcount
        return int(consumed) + int(expired)

    def drop_group(self, group: str) -> None:
        """Forget a consumer group: its cursors and its unacked deliveries."""
        with self._lock:
            self.db.execute("DELETE FROM cursors WHERE grp = ?", (group,))
            self.db.execute("DELETE FROM pending WHERE grp = ?", (group,))

    def lag(self, topic: str, group: str) -> int | None:
        """Messages of ``topic`` that ``group`` has not acked (not yet handed out, or handed
        out and unacked); None when the group never subscribed. Blocking: call in a thread."""
        with self._lock:
            row = self.db.execute(
                "SELECT (SELECT COUNT(*) FROM messages WHERE topic = c.topic AND seq >= c.next_seq)"
                " + (SELECT COUNT(*) FROM pending WHERE grp = c.grp AND topic = c.topic)"
                " FROM cursors c WHERE c.grp = ? AND c.topic = ?",
                (group, topic),
            ).fetchone()
        return None if row is None else int(row[0])

    # -- used by subscriptions ------------------------------------------------------------

    def _claim(self, topic: str, group: str, owner: str, limit: int) -> list[Delivery]:
        """Hand out up to ``limit`` messages: first those pending under another owner, then
        new ones, moving the cursor in the same transaction."""
        found: list[Delivery] = []
        with self._lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                stale = db.execute(
                    "SELECT m.seq, m.body, m.headers FROM pending p"
                    " JOIN messages m ON m.seq = p.seq"
                    " WHERE p.grp = ? AND p.topic = ? AND p.owner != ?"
                    " ORDER BY p.seq LIMIT ?",
                    (group, topic, owner, limit),
                ).fetchall()
                for seq, body, headers in stale:
                    db.execute(
                        "UPDATE pending SET owner = ?, deliveries = deliveries + 1"
                        " WHERE grp = ? AND topic = ? AND seq = ?",
                        (owner, group, topic, seq),
                    )
                    found.append(self._delivery(topic, group, seq, body, headers, True))
                room = limit - len(found)
                if room > 0:
                    (cursor,) = db.execute(
                        "SELECT next_seq FROM cursors WHERE grp = ? AND topic = ?", (group, topic)
                    ).fetchone()
                    fresh = db.execute(
                        "SELECT seq, body, headers FROM messages WHERE topic = ? AND seq >= ?"
                        " ORDER BY seq LIMIT ?",
                        (topic, cursor, room),
                    ).fetchall()
                    for seq, body, headers in fresh:
                        db.execute(
                            "INSERT INTO pending (grp, topic, seq, owner, deliveries)"
                            " VALUES (?, ?, ?, ?, 1)",
                            (group, topic, seq, owner),
                        )
                        found.append(self._delivery(topic, group, seq, body, headers, False))
                    if fresh:
                        db.execute(
                            "UPDATE cursors SET next_seq = ? WHERE grp = ? AND topic = ?",
                            (fresh[-1][0] + 1, group, topic),
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return found

    def _delivery(
        self, topic: str, group: str, seq: int, body: bytes, headers: str, redelivered: bool
    ) -> Delivery:
        message = Message(topic, bytes(body), json.loads(headers), str(seq), redelivered)
        return EmbeddedDelivery(self, group, seq, message)

    def _ack(self, topic: str, group: str, seq: int) -> None:
        with self._lock:
            self.db.execute(
                "DELETE FROM pending WHERE grp = ? AND topic = ? AND seq = ?", (group, topic, seq)
            )

    def _watch(self, topic: str, event: asyncio.Event) -> None:
        self._wakeups.setdefault(topic, set()).add(event)

    def _unwatch(self, topic: str, event: asyncio.Event) -> None:
        self._wakeups.get(topic, set()).discard(event)


@dataclass(slots=True)
class EmbeddedDelivery:
    broker: EmbeddedBroker
    group: str
    seq: int
    message: Message

    async def ack(self) -> None:
        self.broker._ack(self.message.topic, self.group, self.seq)


class EmbeddedSubscription:
    def __init__(self, broker: EmbeddedBroker, topic: str, group: str) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.owner = secrets.token_hex(8)
        self._event = asyncio.Event()
        broker._watch(topic, self._event)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            self._event.clear()
            found = self.broker._claim(self.topic, self.group, self.owner, max_messages)
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            try:
                await asyncio.wait_for(self._event.wait(), min(left, POLL))
            except TimeoutError:
                pass

    async def close(self) -> None:
        self.broker._unwatch(self.topic, self._event)
