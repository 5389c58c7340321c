"""A fork server's preload for the orphan test (test_kinds): every run forked from that server
pauses after its first training step, writing `$HPSTUDY_TEST_PAUSED/<its pid>`, and sleeps,
so that a driver killed then leaves its workers mid-run on every machine, however fast."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpstudy.run import loop

batches = loop.batches


def batches_pausing(*args: Any) -> Iterator[Any]:
    for i, batch in enumerate(batches(*args)):
        if i == 1:
            (Path(os.environ["HPSTUDY_TEST_PAUSED"]) / str(os.getpid())).write_text("paused")
            time.sleep(600)
        yield batch


loop.batches = batches_pausing
