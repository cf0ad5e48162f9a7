"""Write flow control shared by the instance's protocols."""

from __future__ import annotations

import asyncio


class WriteFlow(asyncio.Protocol):
    """A protocol whose writers wait on ``writable`` while the transport's buffer is above its
    high-water mark (``while self.writable is not None: await self.writable``). Subclasses set
    ``self.writable = None`` in ``__init__`` and call ``resume_writing`` when the connection is
    lost, so a paused writer wakes up to find it gone."""

    writable: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
