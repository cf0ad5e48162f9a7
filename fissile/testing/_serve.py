"""The process ``invoke_local`` starts: the instance server of ``fissile.runtime.server`` on a
listening unix socket it inherits, as a zygote's fork serves one, minus the zygote.

``python -m fissile.testing._serve FD TOKEN``
"""

from __future__ import annotations

import socket
import sys


def main(argv: list[str]) -> None:
    from fissile.executor._prctl import die_with_parent
    from fissile.runtime.server import serve

    fd, token = int(argv[0]), argv[1]
    die_with_parent()  # a test killed hard leaves no instance behind
    serve(socket.socket(fileno=fd), token)


if __name__ == "__main__":
    main(sys.argv[1:])
