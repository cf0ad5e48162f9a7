from collections.abc import Sequence
from typing import Any

def json_lines(records: Sequence[tuple[Any, ...]], offset: float, prefix: str, /) -> bytes: ...
