"""log-compress's tests: the function's module importable, and a directory of logs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE / "functions"))


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Two logs last written two hours ago, the one being written now, an old .gz."""
    logs = tmp_path / "logs"
    logs.mkdir()
    old = time.time() - 2 * 3600
    for name, lines in (("app-1.log", 2000), ("app-2.log", 500), ("app.log", 10)):
        path = logs / name
        path.write_text("".join(f"GET /item/{n} 200 {n % 97}ms\n" for n in range(lines)))
        if name != "app.log":
            os.utime(path, (old, old))
    (logs / "app-0.log.gz").write_bytes(b"\x1f\x8b old")
    return logs
