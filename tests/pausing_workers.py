"""A fork server's preload for the orphan test (test_kinds): every run forked from that server
pauses after its first training step, writing `$HPSTUDY_TEST_PAUSED/<its pid>`, and sleeps,
so that a driver killed then leaves its workers mid-run on every machine, however fast.
Only runs pause: the study's other calls in workers (its speed, timed there) go on."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpstudy.run import loop

batches, train_epochs = loop.batches, loop.train_epochs
in_a_run = False


def train_epochs_marked(*args: Any, **kwargs: Any) -> Any:
    global in_a_run
    in_a_run = True
    return train_epochs(*args, **kwargs)


def batches_pausing(*args: Any) -> Iterator[Any]:
    for i, batch in enumerate(batches(*args)):
        if i == 1 and in_a_run:
            (Path(os.environ["HPSTUDY_TEST_PAUSED"]) / str(os.getpid())).write_text("paused")
            time.sleep(600)
        yield batch


loop.batches, loop.train_epochs = batches_pausing, train_epochs_marked
