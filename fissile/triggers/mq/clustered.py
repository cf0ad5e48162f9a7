"""The ``embedded`` MQ type in a cluster: NATS JetStream under a subject prefix of the
cluster's own (``docs/cluster.md``).

One node's embedded broker is a SQLite file no other node can read; a cluster's must be shared,
so there it is the ``nats`` broker (``nats.py``) with every topic ``T`` stored as the subject
``fissile.<cluster>.T``, where ``<cluster>`` is a hash of the PostgreSQL database and schema
the nodes share: two clusters on one NATS never see each other's messages. A trigger's group is
one durable pull consumer, fetched from by the trigger's consumer on every node, so JetStream
spreads its messages over the nodes; a delivery a dead node took comes again after
``ack_wait`` (10 s here unless the URL says otherwise): at-least-once, as on one node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fissile.triggers.mq.base import Subscription, broker_class

if TYPE_CHECKING:
    from fissile.triggers.mq.nats import NatsBroker

# A dead node's deliveries come back after this long (seconds) unless the URL sets ack_wait.
ACK_WAIT = 10.0


def namespace(database: str, schema: str) -> str:
    """The subject prefix of the cluster whose state is ``schema`` in ``database``."""
    digest = hashlib.sha256(f"{database}\0{schema}".encode()).hexdigest()[:12]
    return f"fissile.{digest}"


class ClusterBroker:
    mqtype = "embedded"

    def __init__(self, url: str, prefix: str) -> None:
        if "ack_wait=" not in url:
            url += ("&" if "?" in url else "?") + f"ack_wait={ACK_WAIT:g}"
        self.prefix = prefix
        # Through broker_class: without the nats extra, a MissingExtra naming it.
        self.nats: NatsBroker = broker_class("nats")(url)  # type: ignore[call-arg,assignment]

    def subject(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    async def start(self) -> None:
        await self.nats.start()

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.nats.publish(self.subject(topic), body, headers)

    async def subscribe(self, topic: str, group: str) -> Subscription:
        return await self.nats.subscribe(self.subject(topic), group)

    async def drop_group(self, topic: str, group: str) -> bool:
        """Delete ``group``'s durable consumer of ``topic``: its trigger was deleted, or moved
        to another topic. Every node does it once its own consumer stopped, so the last one
        to stop deletes it for good (a node still fetching might have made it again)."""
        return await self.nats.drop_group(self.subject(topic), group)

    async def close(self) -> None:
        await self.nats.close()
