"""Revisions: the immutable, numbered history of what each function served.

A revision is what instances are made from: the function's spec and the build (deploy
directory) of its package at the time, with what changed since the one before. The newest
revision of a function is the one it serves; a rollback adds a revision copying an older one.
Only the newest ``keep`` revisions of a function keep their build; older ones are *pruned*
(still listed, but nothing to roll back to) and, past ``HISTORY``, forgotten.

A protocol of its own beside ``Store``, which includes it: a store on another database
implements both with its own tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

#: Revisions listed per function at most (the newest ones); older rows are deleted.
HISTORY = 100


@dataclass(frozen=True, slots=True)
class Revision:
    function: str
    number: int
    created_at: datetime
    #: ``spec`` (the function's), ``package`` (name, source, buildcmd, env, owner),
    #: ``changes`` (what differs from the revision before), ``rollback_to`` (or None).
    data: dict[str, Any]
    #: The build it serves (a key under the deploy root); None while its package had none.
    deploy: str | None
    pruned: bool = False


class RevisionStore(Protocol):
    def add_revision(self, function: str, deploy: str | None, data: dict[str, Any]) -> Revision:
        """Record the function's next revision (numbered one past its newest)."""
        ...

    def revisions(self, function: str) -> list[Revision]:
        """The function's revisions, oldest first."""
        ...

    def revision(self, function: str, number: int) -> Revision | None: ...

    def latest_revision(self, function: str) -> Revision | None: ...

    def prune_revisions(self, function: str, keep: int) -> list[Revision]:
        """Mark all but the newest ``keep`` revisions pruned; the ones newly pruned."""
        ...

    def forget_revisions(self, function: str) -> list[Revision]:
        """Delete every revision of a deleted function; the ones deleted."""
        ...

    def kept_deploys(self) -> set[str]:
        """The builds some unpruned revision (of any function) serves or may return to."""
        ...
