"""The Celery app the worker tests start (``celery -A tests.jobs.worker worker``).

Configured from the environment the test sets: broker, queue, database, the local
gateway's Management API, batch and shard sizes. Each prefork child builds its own
:class:`WebSocketApp` (after the fork) and records its pid, and the main process writes a
file once the worker is ready, so the test knows what to wait for and what to kill.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from botocore.credentials import Credentials
from celery import Celery
from celery.signals import task_prerun, worker_process_init, worker_ready
from sqlalchemy import create_engine

from apigw_ws_celery import CeleryRunner
from apigw_ws_core import Config, WebSocketApp
from apigw_ws_core.transport import ManagementApiTransport
from apigw_ws_storage.sqla import SqlaStorage

ENV = os.environ
STATE = Path(ENV.get("JOBS_STATE_DIR", "."))


def build_app() -> WebSocketApp:
    """The app a worker child runs jobs with (the same settings as the test's)."""
    engine = create_engine(ENV["JOBS_DB_URL"], connect_args={"timeout": 30})
    config = Config(
        secret="jobs-secret",
        require_token=False,
        job_batch_size=int(ENV.get("JOBS_BATCH", "10")),
        job_shard_size=int(ENV.get("JOBS_SHARD", "50000")),
        job_rate_limit=None,
        send_concurrency=int(ENV.get("JOBS_CONCURRENCY", "16")),
        send_max_concurrency=int(ENV.get("JOBS_MAX_CONCURRENCY", "16")),
    )
    transport = ManagementApiTransport(
        ENV["JOBS_MANAGEMENT_ENDPOINT"], credentials=Credentials("test", "test")
    )
    return WebSocketApp(storage=SqlaStorage(engine), transport=transport, config=config)


celery_app = Celery("apigw_ws_jobs_test", broker=ENV.get("JOBS_BROKER_URL"))
celery_app.conf.update(
    imports=["apigw_ws_celery"],
    task_default_queue=ENV.get("JOBS_QUEUE", "celery"),
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    CeleryRunner(build_app())
    with (STATE / "children").open("a") as f:
        f.write(f"{os.getpid()}\n")


@worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    (STATE / f"ready-{os.getpid()}").write_text("ready")


@task_prerun.connect
def _task_started(task: Any = None, args: Any = None, **_: Any) -> None:
    message = args[0] if args else {}
    with (STATE / "tasks").open("a") as f:
        f.write(f"{os.getpid()} {message.get('part')}\n")
