"""Where a request goes when this node's instances of its function are all busy: to a peer
with a free slot of the function, to a peer that should start the next instance (the
function's instances are spread over the nodes), or nowhere (it waits here); and how many of
the instances a function keeps warm this node holds.

Pure functions of this node's view of the cluster (its peers' last heartbeats, at most a
second old) and of what it forwarded itself. A heartbeat tells a peer's instances of each
function and their free slots then; this node knows which of the busy slots were its own
forwarded requests, and how many it has in flight now. So a peer's free slots now are taken
as its instances' slots less the rest of its load at the heartbeat (its own clients, other
nodes: assumed still there) less this node's requests in flight: a burst does not send every
request to the one peer the view shows as free, and the slots freed since the heartbeat by
this node's answered requests count as free again.
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence

from fissile.cluster.nodes import NodeInfo

# The next instance of a function starts on a peer rather than here when the peer holds at
# least this many fewer instances of it than this node. With 1, every function's second
# instance would already leave the node that received the traffic, each move paying a hop
# for the request that starts it (and, on a peer that never ran the function, fetching its
# build); with 2, a node keeps a pair before spreading, and the counts of the nodes that
# receive no traffic of their own stay within 2 of the busiest one's.
SPREAD_MARGIN = 2


def choose(
    function: str,
    *,
    held: int,
    memory: int,
    memory_free: int,
    max_scale: int,
    limit: int,
    peers: Sequence[NodeInfo],
    forwarded: Mapping[str, tuple[int, int]],
    unreachable: Container[str] = (),
) -> NodeInfo | None:
    """The peer to forward a request for ``function`` to, when this node holds ``held``
    instances of it (ready or starting) and none can take one more request.

    ``memory`` is the function's memory limit and ``memory_free`` this node's free memory
    (0: unknown); ``limit`` the requests one instance serves at once; ``forwarded`` the
    requests for the function this node had forwarded to each peer in flight at the peer's
    heartbeat in the view, and those in flight now; ``unreachable`` the peers not tried for
    now.

    In order: the serving peer with the most free slots of the function (a warm instance
    beats a wait here and a start anywhere); if none, and the cluster is under
    ``max_scale``, the serving peer that should start the next instance: one with room for
    it (free memory at least ``memory``) and at least ``SPREAD_MARGIN`` fewer instances of the
    function than this node (any roomy one when this node lacks the memory itself), the one
    with the fewest, then the most free memory. None: the request waits here (and this node
    starts the instance if the cluster's bound allows)."""
    candidates: list[tuple[NodeInfo, int]] = []  # (serving peer, its instances as estimated)
    total = held
    best: NodeInfo | None = None
    best_free = 0
    for node in peers:
        if not node.alive:
            continue
        theirs = node.functions.get(function, 0)
        seen, flying = forwarded.get(node.name, (0, 0))
        slots = theirs * limit
        # Its load at the heartbeat that was not this node's requests, taken as still there.
        others = max(0, slots - node.idle.get(function, 0) - seen)
        free = slots - others - flying
        # Requests past its slots start instances there (one per ``limit``).
        count = theirs + math.ceil(max(0, -free) / limit)
        total += count
        if node.state != "active" or node.name in unreachable:
            continue
        if free > best_free:
            best, best_free = node, free
        candidates.append((node, count))
    if best is not None:
        return best
    if total >= max_scale:
        return None  # no instance may start anywhere: wait for one here
    # Short of memory here, any peer with room beats this node; otherwise only a peer
    # holding fewer by the margin.
    most = math.inf if 0 < memory_free < memory else held - SPREAD_MARGIN
    roomy = [
        (count, -node.memory_free, node)
        for node, count in candidates
        if node.memory_free >= memory and count <= most
    ]
    if not roomy:
        return None
    return min(roomy, key=lambda entry: entry[:2])[2]


def warm_share(
    function: str,
    *,
    min_scale: int,
    memory: int,
    draining: bool,
    peers: Sequence[NodeInfo],
) -> int:
    """How many of the ``min_scale`` instances ``function`` keeps warm this node should hold.

    Each serving node takes an equal share (rounded up), this one none while it is drained;
    and this node tops the cluster up to ``min_scale`` for the peers that will not take
    theirs: those drained, dead or without room for an instance (free memory below
    ``memory``). A peer holding more than its share counts for what it holds. So the
    instances kept warm spread over the nodes instead of all starting on whichever node
    claimed first, and the claims (bounded by ``min_scale`` across the cluster) still keep
    the total."""
    takers = [node for node in peers if node.serving]
    nodes = len(takers) + (0 if draining else 1)
    if not nodes:
        return min_scale  # no one else to keep them
    share = math.ceil(min_scale / nodes)
    others = 0
    for node in peers:
        if not node.alive:
            continue
        held = node.functions.get(function, 0)
        taking = share if node.serving and node.memory_free >= memory else 0
        others += max(held, taking)
    mine = 0 if draining else share
    return min(min_scale, max(mine, min_scale - others))
