"""Revision targets of weighted routes: ``a@3`` in a route's ``function_weights`` is revision 3
of function ``a``.

The executor keeps one pool per function name, so a revision target is served by a function of
its own that the control plane makes from that revision's spec and kept build (no rebuild) when
a route first names it, and deletes when no route names it any more
(``controlplane/revision_functions.py``). Its name is ``<function>-r<number>``; the router maps
a target to that name when it builds its route table, so a request pays nothing for it.
"""

from __future__ import annotations

import re

from fissile._names import NAME_MAX

TARGET_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(@[1-9][0-9]{0,8})?$"
#: Labels of a revision function: the function and the revision it serves.
REVISION_OF = "fissile.io/revision-of"
REVISION = "fissile.io/revision"

_TARGET = re.compile(r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)@([1-9][0-9]{0,8})")


def parse(target: str) -> tuple[str, int] | None:
    """``('a', 3)`` for ``'a@3'``; None for a plain function name."""
    match = _TARGET.fullmatch(target)
    return None if match is None else (match.group(1), int(match.group(2)))


def function_name(function: str, number: int) -> str:
    """The name of the function serving revision ``number`` of ``function``."""
    return f"{function}-r{number}"


def resolve(target: str) -> str:
    """The function a target is served by: itself, or its revision function."""
    parsed = parse(target)
    return target if parsed is None else function_name(*parsed)


def base(target: str) -> str:
    """The user's function a target belongs to."""
    parsed = parse(target)
    return target if parsed is None else parsed[0]


def fits(target: str) -> bool:
    """Whether the revision function's name stays within the name length limit."""
    return len(resolve(target)) <= NAME_MAX
