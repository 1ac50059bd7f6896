"""A worker's pool processes keep what start-up made out of full garbage collections (``twofa.heap``), which would
otherwise walk some 175,000 objects and hold up the email codes in flight for about 100 ms."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from celery import Celery

from tests.harness.services import RedisServer, Worker, wait_for

pytestmark = pytest.mark.integration


def test_pool_processes_keep_start_up_objects_out_of_full_collections(
    worker_env: dict[str, str], tmp_path: Path, client_app: Celery, it_redis: RedisServer
) -> None:
    worker = Worker(
        env=worker_env, log_path=tmp_path / "worker.log", extra_args=["--include", "tests.harness.probe"]
    ).start()
    try:
        key = f"probe:{secrets.token_hex(4)}"
        client_app.send_task("probe.heap", args=[key], queue="mail")
        wait_for(lambda: bool(it_redis.client.exists(key)), 30, what="the probe task")
        report = json.loads(it_redis.client.get(key) or b"{}")
        log = worker.log()
    finally:
        worker.stop()
    # Modules, SQLAlchemy's tables, the Celery app: frozen in the main process before the pool forked, and inherited
    # by the pool process (which may have freed a few of them since, and froze nothing of its own).
    (frozen,) = (int(n) for n in re.findall(r"INFO/MainProcess\] froze (\d+) objects made at start-up", log))
    assert 0.9 * frozen <= report["frozen"] <= frozen, (frozen, report)
    assert report["frozen"] > 2 * report["tracked"], report
