"""fissile/executor/_zygote.py: closing every descriptor but those kept (in a forked child)."""

from __future__ import annotations

import json
import os

from fissile.executor._zygote import close_fds_except, open_fds


def test_everything_but_the_kept_descriptors_is_closed() -> None:
    read_fd, write_fd = os.pipe()
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    high = os.dup2(extra[0], 200, inheritable=False)
    pid = os.fork()
    if pid == 0:
        try:
            close_fds_except({0, 1, 2, write_fd, extra[1]})
            os.write(write_fd, json.dumps(sorted(open_fds())).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        left = json.loads(reader.read())
    os.waitpid(pid, 0)
    for fd in (*extra, high):
        os.close(fd)
    assert extra[1] in left and extra[0] not in left and extra[2] not in left and high not in left
    # What remains is what was kept (open_fds' own directory descriptor is closed on return).
    assert set(left) <= {0, 1, 2, write_fd, extra[1]}
