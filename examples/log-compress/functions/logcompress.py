"""logcompress: gzips the logs of a directory that nobody writes to any more; run by an
hourly timer (or by hand, with a POST).

Settings (the function's environment variables):

- ``LOG_DIR``: the directory (required). The function must be able to see it: on a sandboxed
  platform a function sees only its own private /tmp, so run ``fissile up --sandbox off`` for
  a host directory (README.md).
- ``LOG_PATTERN``: which files, a glob (default ``*.log``); ``.gz`` files are never taken.
- ``LOG_MIN_AGE``: seconds since a file's last change before it is compressed (default 3600),
  so the file a program is still writing is left alone.

Each file becomes ``<name>.gz`` beside it (written to a temporary name, then renamed, so a crash
leaves no half file under the final name), keeps its modification time, and only then is the
original removed. The answer (JSON) lists what was done.
"""

import gzip
import os
import shutil
import time
from pathlib import Path


def settings():
    directory = os.environ.get("LOG_DIR", "")
    pattern = os.environ.get("LOG_PATTERN", "*.log")
    min_age = float(os.environ.get("LOG_MIN_AGE", "3600"))
    return directory, pattern, min_age


def compress(path):
    """Gzip ``path`` to ``path.gz``; returns the compressed size."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(f".{path.name}.gz.partial")
    stat = path.stat()
    try:
        with path.open("rb") as source, gzip.open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        os.utime(partial, (stat.st_atime, stat.st_mtime))
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    path.unlink()
    return target.stat().st_size


def main(request, context):
    directory, pattern, min_age = settings()
    if not directory:
        return {"error": "LOG_DIR is not set: name the directory whose logs to compress"}, 500
    root = Path(directory)
    if not root.is_dir():
        return {
            "error": f"LOG_DIR {directory} is not a directory this function can see (on a"
            " sandboxed platform a function sees only its own /tmp: see the example's README)"
        }, 500
    now = time.time()
    done, young, before, after = [], [], 0, 0
    for path in sorted(root.glob(pattern)):
        if not path.is_file() or path.is_symlink() or path.suffix == ".gz":
            continue
        size = path.stat().st_size
        if now - path.stat().st_mtime < min_age:
            young.append(path.name)
            continue
        try:
            compressed = compress(path)
        except OSError as exc:
            context.logger.error("%s: not compressed: %s", path.name, exc)
            continue
        context.logger.info("%s: %d -> %d bytes", path.name, size, compressed)
        done.append(path.name)
        before, after = before + size, after + compressed
    return {
        "directory": directory,
        "compressed": done,
        "left_alone": young,
        "bytes_before": before,
        "bytes_after": after,
    }
