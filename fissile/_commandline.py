"""A command environment's command line: split like a shell would (quotes, escapes), without
running one. Apart from the models so that instances can use it without pydantic."""

from __future__ import annotations

import shlex


def split_command(command: str) -> list[str]:
    """The program and its arguments; ``ValueError`` for an empty or malformed line (an
    unclosed quote, a NUL). Shell syntax (pipes, ``&&``, ``$VAR``) is not interpreted: a
    command that needs it runs ``sh -c '...'``."""
    if "\0" in command:
        raise ValueError("a command cannot contain NUL")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"cannot split command {command!r}: {exc}") from None
    if not argv:
        raise ValueError("the command is empty")
    return argv
