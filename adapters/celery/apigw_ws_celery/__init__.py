"""Durable background sends on Celery (the ``[celery]`` extra).

:class:`CeleryRunner` is a ``background_runner``: with it,
:meth:`~apigw_ws_core.app.WebSocketApp.send_in_background` stores a durable job (see
:mod:`apigw_ws_core.jobs`) and enqueues :func:`send_job`, the ready task, instead of using a
thread of the web process. It returns a :class:`~apigw_ws_core.jobs.JobHandle`::

    # anywhere: a plain WebSocketApp
    from apigw_ws_celery import CeleryRunner
    app.background_runner = CeleryRunner(app)

    # Django: APIGW_WS = {"BACKGROUND_RUNNER": "celery", ...}
    # Flask:  app.config["APIGW_WS_BACKGROUND_RUNNER"] = "celery"

Workers need the task registered and the app built: import this module in the worker
(``Celery(..., include=["apigw_ws_celery"])``, or ``imports``). The task finds its
:class:`~apigw_ws_core.app.WebSocketApp` through the last :class:`CeleryRunner` built in
the process (the Flask extension and the Django settings build one when configured), or,
in a Django project, the adapter's ``get_app()``.

Safe defaults, set on the task: late acknowledgement (``acks_late``) and
``reject_on_worker_lost``, so a worker killed mid-job leads to redelivery and the job
resumes from its checkpoint; retries with exponential backoff on any other exception; the
part is marked ``failed`` when retries run out. With the Redis broker, set
``broker_transport_options = {"visibility_timeout": ...}`` above your longest shard's
run time (shards of ``job_shard_size`` recipients keep tasks short).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task

from apigw_ws_core.errors import ConfigurationError, PayloadTooLarge
from apigw_ws_core.jobs import JobHandle, create_job, fail_job_part, run_job_part

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.fanout import SendJob

__all__ = ["TASK_NAME", "CeleryRunner", "send_job"]

#: The registered name of the task.
TASK_NAME = "apigw_ws.send_job"

ContextFactory = Callable[[], AbstractContextManager[Any]]

_current: tuple[WebSocketApp, ContextFactory | None] | None = None
_current_lock = threading.Lock()


def _register(app: WebSocketApp, context: ContextFactory | None) -> None:
    global _current
    with _current_lock:
        _current = (app, context)


def _resolve() -> tuple[WebSocketApp, ContextFactory | None]:
    """The app jobs run with in this process."""
    if _current is None and "django" in sys.modules:
        from django.conf import settings

        if settings.configured:
            from apigw_ws_django.runtime import get_app

            get_app()  # builds the runtime; a configured CeleryRunner registers itself
            if _current is None:
                return get_app(), None
    if _current is None:
        raise ConfigurationError(
            "no apigw-ws app in this Celery worker: build the app (create your Flask app, "
            "or CeleryRunner(app)) when the worker starts"
        )
    return _current


class SendJobTask(Task):  # type: ignore[misc]
    """Task class of :func:`send_job`: marks the job part failed when retries run out."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Record the failure on the part, so that the job's status says ``failed``."""
        message = args[0] if args else kwargs.get("message")
        try:
            app, context = _resolve()
            with (context or nullcontext)():
                fail_job_part(
                    app.storage,
                    str(message["job_id"]),
                    int(message["part"]),
                    f"{type(exc).__name__}: {exc}",
                )
        except Exception:  # the failure itself is logged by Celery
            import logging

            logging.getLogger("apigw_ws.jobs").exception("could not mark job part failed")


@shared_task(  # type: ignore[misc]
    name=TASK_NAME,
    base=SendJobTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    dont_autoretry_for=(ConfigurationError, PayloadTooLarge, ValueError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
    ignore_result=True,
)
def send_job(self: Task, message: dict[str, Any]) -> dict[str, Any] | None:
    """Run (or resume) one part of a durable send job; shards of a big target are
    enqueued as further ``send_job`` tasks on the same queue. Returns the part's counts."""
    app, context = _resolve()
    queue = None
    delivery = getattr(self.request, "delivery_info", None) or {}
    if delivery.get("routing_key"):
        queue = delivery["routing_key"]

    def enqueue(shard: dict[str, Any]) -> None:
        send_job.apply_async((shard,), queue=queue)

    with (context or nullcontext)():
        part = run_job_part(app, message, enqueue=enqueue)
    return None if part is None else {"status": part.status, **part.counts.as_dict()}


class CeleryRunner:
    """A ``background_runner`` that makes each background send a durable Celery job.

    :param app: the app whose storage keeps the jobs (and whose sends they are).
    :param context: a context manager factory the task runs jobs in (the Flask extension
        passes ``flask_app.app_context``).
    :param queue: the Celery queue (default: the task's default routing).
    :param options: more ``apply_async`` options (``priority``, ``expires`` ...).

    Building one also makes ``app`` the app that :func:`send_job` uses in this process.
    """

    def __init__(
        self,
        app: WebSocketApp,
        *,
        context: ContextFactory | None = None,
        queue: str | None = None,
        **options: Any,
    ):
        self.app = app
        self.queue = queue
        self.options = options
        _register(app, context)

    def __call__(self, job: SendJob) -> JobHandle:
        """Store the job and enqueue its first task; return its handle."""
        payload = self.app.prepare_payload(job.payload, job.channel)
        message = create_job(self.app.storage, payload, job.target)
        send_job.apply_async((message,), queue=self.queue, **self.options)
        return JobHandle(message["job_id"], self.app.storage)
