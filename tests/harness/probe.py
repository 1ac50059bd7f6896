"""A task for tests, loaded into a test's worker with ``--include tests.harness.probe``: it reports, through the
broker's Redis, the state of the pool process that runs it."""

from __future__ import annotations

import gc
import json

import redis

from workers.app import app


@app.task(name="probe.heap", ignore_result=True)
def heap(key: str) -> None:
    """How many objects are frozen out of the garbage collector's reach, and how many it still tracks."""
    report = {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
    with redis.Redis.from_url(str(app.conf.broker_url)) as client:
        client.set(key, json.dumps(report), ex=300)
