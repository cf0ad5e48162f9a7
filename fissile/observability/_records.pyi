from collections.abc import Sequence
from typing import Any

def json_lines(records: Sequence[tuple[Any, ...]], offset: float, prefix: str, /) -> bytes: ...
def tally(
    records: Sequence[tuple[Any, ...]], bounds: tuple[float, ...], /
) -> list[tuple[str, dict[int, int], list[int], float, list[int], float, int, int]]: ...
