"""Healing: make storage agree with API Gateway about which connections are open.

A ``$disconnect`` can be lost: the app was down or killed while clients closed, its
database did not answer, API Gateway gave up. The session then stays "connected" until a
send happens to hit a ``410``. :meth:`WebSocketApp.heal <apigw_ws_core.app.WebSocketApp.heal>`
repairs that without guessing:

* it asks API Gateway about every session that **may** be stale, ``GET @connections/{id}``,
  through the same engine as a broadcast (bounded concurrency, a rate cap that leaves room
  under the account's 10,000 requests/s, retries on 429/5xx), reading sessions from
  storage in keyset batches (fine at 100,000 sessions; nothing is loaded at once);
* it marks disconnected exactly the sessions API Gateway answers ``410 Gone`` for, in bulk.
  A connection that answers is alive and is never touched; one whose answer is an error
  is left alone and reported as unknown;
* sessions younger than ``min_age`` seconds are not asked: API Gateway answers 410 for a
  connection whose ``$connect`` is still running;
* a run that reaches its deadline leaves the rest for later runs. Each run starts at a
  random point of the connection-id order and wraps around (:func:`heal_order`), so the
  sessions a short run reaches differ from run to run instead of always being the lowest
  ids: with ``N`` candidates and room for ``C`` per run, a session is missed by ``k``
  runs in a row with probability ``(1 - C/N)^k``. Within its capacity a run checks all.

Age alone decides only past API Gateway's hard maximum of 2 hours per connection
(:meth:`~apigw_ws_core.storage.Storage.cleanup`); :meth:`WebSocketApp.cleanup
<apigw_ws_core.app.WebSocketApp.cleanup>` runs both, and is what the Django command, the
Flask CLI and a scheduled Lambda call.
"""

from __future__ import annotations

import base64
import itertools
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs

from apigw_ws_core.fanout import SendReport
from apigw_ws_core.storage import CleanupReport, Storage

__all__ = ["MAX_CONNECTION_SECONDS", "CleanupResult", "HealReport", "heal_order"]

#: API Gateway closes every WebSocket connection after 2 hours, whatever happens.
MAX_CONNECTION_SECONDS = 7200


def heal_order(
    storage: Storage, cutoff: datetime, *, start: str | None = None
) -> Iterator[list[str]]:
    """The sessions one healing run asks about: every connected session older than
    ``cutoff``, each once, beginning after ``start`` in connection-id order and wrapping
    around to the ids up to ``start``. ``start`` defaults to a random, AWS-shaped
    connection id (base64 of 11 random bytes), which splits the ids at a uniformly random
    point, since AWS connection ids are random too."""
    if start is None:
        start = base64.b64encode(secrets.token_bytes(11)).decode("ascii")
    return itertools.chain(
        storage.iter_connected_before(cutoff, after=start),
        storage.iter_connected_before(cutoff, upto=start),
    )


@attrs.frozen(kw_only=True)
class HealReport:
    """What healing found.

    :ivar checked: sessions asked about.
    :ivar alive: sessions API Gateway still knows (left connected).
    :ivar gone: ids API Gateway answered 410 for: marked disconnected (with ``dry_run``:
        would be).
    :ivar unknown: ids whose answer was an error (429/5xx retried out, network): left alone.
    :ivar marked: sessions actually changed to disconnected (0 with ``dry_run``).
    :ivar elapsed: seconds.
    :ivar dry_run: nothing was changed.
    :ivar first_error: the first error, as text, if any.
    """

    checked: int = 0
    alive: int = 0
    gone: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    marked: int = 0
    elapsed: float = 0.0
    dry_run: bool = False
    first_error: str | None = None

    @classmethod
    def from_report(cls, report: SendReport, *, dry_run: bool) -> HealReport:
        """The healing view of a probing fan-out's report."""
        return cls(
            checked=report.recipients,
            alive=report.delivered,
            gone=report.gone,
            unknown=report.failed,
            marked=report.marked_disconnected,
            elapsed=report.elapsed,
            dry_run=dry_run,
            first_error=report.first_error,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (counts only)."""
        return {
            "checked": self.checked,
            "alive": self.alive,
            "gone": len(self.gone),
            "unknown": len(self.unknown),
            "marked": self.marked,
            "elapsed": round(self.elapsed, 3),
            "dry_run": self.dry_run,
            "first_error": self.first_error,
        }


@attrs.frozen(kw_only=True)
class CleanupResult:
    """What :meth:`WebSocketApp.cleanup <apigw_ws_core.app.WebSocketApp.cleanup>` did:
    healing (``None`` when skipped), the storage housekeeping, and old send jobs."""

    heal: HealReport | None
    storage: CleanupReport
    jobs: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for a scheduled Lambda's result, logs)."""
        return {
            "heal": None if self.heal is None else self.heal.as_dict(),
            "storage": attrs.asdict(self.storage),
            "jobs": self.jobs,
            "dry_run": self.dry_run,
        }

    def summary(self) -> str:
        """One line for a command's output."""
        would = self.dry_run
        parts = []
        if self.heal is not None:
            h = self.heal
            parts.append(
                f"asked API Gateway about {h.checked} session(s): {h.alive} alive, "
                f"{len(h.gone)} gone ({'would be' if would else 'now'} marked disconnected), "
                f"{len(h.unknown)} unknown"
            )
        s = self.storage
        parts.append(
            f"{'would mark' if would else 'marked'} {s.stale_sessions} session(s) past the "
            f"2 h maximum disconnected; {'would remove' if would else 'removed'} "
            f"{s.old_disconnected} old disconnected session(s), {s.expired_tokens} expired "
            f"token(s), {s.counters} counter(s), {s.history_messages} history message(s), "
            f"{self.jobs} old send job(s)"
        )
        return "; ".join(parts) + "."
