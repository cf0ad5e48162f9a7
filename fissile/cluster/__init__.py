"""Cluster mode (``fissile up --cluster``, docs/cluster.md): nodes sharing a PostgreSQL store.

``nodes``: the registry of nodes and their heartbeats; ``peers``: forwarding a request to
another node's router; ``artifacts``: builds fetched from the node that made them;
``ratelimits``: routes' and API keys' rate limits held across the routers, over NATS.
``sources``: source archives copied to every node, so any node builds any package.
"""
