"""The collector and a process that holds thousands of accounts.

Every relayed account keeps a few hundred objects alive for as long as the process runs (its relay, tasks,
websocket, buffers). With 10,000 accounts that is millions of objects, and each full collection walks them
all: seconds during which no notification moves. Once the streams are open, `freeze_long_lived` moves what
is alive then out of the collector's reach (`gc.freeze`), so later collections walk only what came after.
Frozen objects are never collected; they were going to live until the process ends anyway.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_long_lived"]


def freeze_long_lived() -> None:
    gc.collect()  # garbage from start-up goes first; freezing it would keep it for good
    gc.freeze()
