"""Durable send jobs on RQ: the job contract of :mod:`apigw_ws_core.jobs` on another queue.

``rq_runner(ws_app, queue)`` is a ``background_runner``: ``send_in_background`` stores the
job and enqueues its first message; a worker runs :func:`run_part` for each message, which
enqueues the shards of a big target on the same queue. A message that raises is retried
(``Retry``); one whose worker died can be requeued from RQ's failed-job registry and resumes
from its checkpoint. Tested by ``tests/docs/test_rq_example.py`` with a real RQ worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rq import Queue, Retry

from apigw_ws_core.app import WebSocketApp
from apigw_ws_core.fanout import SendJob
from apigw_ws_core.jobs import JobHandle, create_job, run_job_part

#: How the worker finds your app (set it where the worker imports your code).
get_ws_app: Callable[[], WebSocketApp] | None = None

RETRY = Retry(max=8, interval=[1, 5, 30, 60])


def run_part(message: dict[str, Any]) -> dict[str, Any] | None:
    """The RQ job: run (or resume) one part; shards go to the queue it came from."""
    from rq import get_current_job

    if get_ws_app is None:
        raise RuntimeError("set rq_jobs.get_ws_app in the worker")
    current = get_current_job()
    queue = current.origin if current is not None else "apigw-ws"
    connection = current.connection if current is not None else None

    def enqueue(shard: dict[str, Any]) -> None:
        Queue(queue, connection=connection).enqueue(run_part, shard, retry=RETRY)

    part = run_job_part(get_ws_app(), message, enqueue=enqueue)
    return None if part is None else {"status": part.status, **part.counts.as_dict()}


def rq_runner(ws_app: WebSocketApp, queue: Queue) -> Callable[[SendJob], JobHandle]:
    """A ``background_runner`` enqueuing durable jobs on ``queue``."""

    def run(job: SendJob) -> JobHandle:
        payload = ws_app.prepare_payload(job.payload, job.channel)  # history channels
        message = create_job(ws_app.storage, payload, job.target)
        queue.enqueue(run_part, message, retry=RETRY)
        return JobHandle(message["job_id"], ws_app.storage)

    return run
