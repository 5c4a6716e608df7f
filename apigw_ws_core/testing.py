"""Test helpers for apigw-ws users and backends.

* :func:`gateway_headers` and :func:`lambda_event` build what API Gateway sends;
* :class:`RecordingTransport` (re-exported) records what was sent;
* :func:`new_connection_id` makes AWS-shaped ids;
* :class:`StorageContract` is the contract suite every :class:`Storage` must pass. Subclass it
  in a pytest module and provide a ``storage`` fixture::

      class TestMyStorage(StorageContract):
          @pytest.fixture
          def storage(self):
              return MyStorage(...)          # empty storage

  Concurrency tests take a ``storage_factory`` fixture (a new storage object on the same
  database for each thread) when the backend is not thread-safe by itself; by default the
  same object is shared.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

try:  # the contract suite needs pytest; the rest of this module does not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

from apigw_ws_core.errors import ChannelForbidden, ConnectionExists, InvalidToken, RateLimited
from apigw_ws_core.events import (
    HEADER_CONNECTION_ID,
    HEADER_EVENT_TYPE,
    HEADER_REQUEST_ID,
    HEADER_ROUTE_KEY,
    HEADER_SECRET,
    HEADER_SOURCE_IP,
    HEADER_STAGE,
)
from apigw_ws_core.gateways import GatewayRecord, GatewayStore
from apigw_ws_core.storage import (
    Admission,
    ConnectPlan,
    CounterHit,
    CountFunc,
    JobCounts,
    JobPart,
    Session,
    Storage,
    Token,
)
from apigw_ws_core.tokens import token_keys, verify_token
from apigw_ws_core.transport import RecordingTransport, SentMessage

if TYPE_CHECKING:
    from apigw_ws_core.app import WebSocketApp

__all__ = [
    "RecordingTransport",
    "SentMessage",
    "StorageContract",
    "gateway_headers",
    "lambda_event",
    "new_connection_id",
    "redeem_token",
]


def redeem_token(
    app: WebSocketApp, token: str, *, channel: str | None = None, origin: str | None = None
) -> str:
    """Redeem ``token`` as a ``$connect`` to ``channel`` from ``origin`` would, without
    one: check its signature and expiry, spend it in the app's storage, then check its
    bindings (a wrongly bound token is spent too, as at ``$connect``).
    Returns its user id; raises ``InvalidToken`` otherwise. For tests of token issuers
    (CLIs, views): a token it accepted can never be used again."""
    claims = verify_token(token_keys(app.config), token, now=app.clock())
    # spent first, as at $connect: a token presented with the wrong binding is burnt too
    if not app.storage.spend_token(claims.spent(app.clock())) or not claims.binds(channel, origin):
        raise InvalidToken()
    return claims.user_id


def new_connection_id() -> str:
    """An AWS-shaped connection id: base64 of 11 random bytes (16 chars, ends in ``=``)."""
    return base64.b64encode(secrets.token_bytes(11)).decode("ascii")


_ROUTE_KEYS = {"connect": "$connect", "disconnect": "$disconnect", "default": "$default"}
_EVENT_TYPES = {"connect": "CONNECT", "disconnect": "DISCONNECT"}


def gateway_headers(
    route: str,
    connection_id: str,
    *,
    secret: str | None,
    stage: str = "test",
    source_ip: str = "203.0.113.10",
    origin: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers our provisioned HTTP_PROXY integration sends for ``route``."""
    headers = {
        HEADER_CONNECTION_ID: connection_id,
        HEADER_ROUTE_KEY: _ROUTE_KEYS.get(route, route),
        HEADER_EVENT_TYPE: _EVENT_TYPES.get(route, "MESSAGE"),
        HEADER_REQUEST_ID: secrets.token_hex(8),
        HEADER_STAGE: stage,
        HEADER_SOURCE_IP: source_ip,
        "connectionId": connection_id,
        "User-Agent": "Mozilla/5.0 (test)" if route == "connect" else "AmazonAPIGateway_test",
    }
    if secret is not None:
        headers[HEADER_SECRET] = secret
    if origin is not None:
        headers["Origin"] = origin
    headers.update(extra or {})
    return {k.title() if k.islower() else k: v for k, v in headers.items()}


def lambda_event(
    event_type: str,
    connection_id: str,
    *,
    body: str | None = None,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    route_key: str | None = None,
    stage: str = "test",
    api_id: str = "abcdef1234",
    source_ip: str = "203.0.113.10",
) -> dict[str, Any]:
    """A Lambda WebSocket proxy event of ``event_type`` (CONNECT/MESSAGE/DISCONNECT), shaped
    like the ones API Gateway sends (see the aws-lambda-go test fixtures)."""
    now = datetime.now(UTC)
    kind = event_type.upper()
    ctx: dict[str, Any] = {
        "routeKey": route_key
        or {"CONNECT": "$connect", "DISCONNECT": "$disconnect"}.get(kind, "$default"),
        "eventType": kind,
        "extendedRequestId": secrets.token_hex(8),
        "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "messageDirection": "IN",
        "stage": stage,
        "connectedAt": int(now.timestamp() * 1000),
        "requestTimeEpoch": int(now.timestamp() * 1000),
        "identity": {"sourceIp": source_ip, "userAgent": "Mozilla/5.0 (test)"},
        "requestId": secrets.token_hex(8),
        "domainName": f"{api_id}.execute-api.us-east-1.amazonaws.com",
        "connectionId": connection_id,
        "apiId": api_id,
    }
    if kind == "MESSAGE":  # AWS leaves messageId out of CONNECT and DISCONNECT events
        ctx["messageId"] = secrets.token_hex(6)
    event: dict[str, Any] = {"requestContext": ctx, "isBase64Encoded": False}
    if kind == "CONNECT":
        hdrs = {"Host": ctx["domainName"], "Sec-WebSocket-Version": "13", **(headers or {})}
        event["headers"] = hdrs
        event["multiValueHeaders"] = {k: [v] for k, v in hdrs.items()}
        if query:
            event["queryStringParameters"] = dict(query)
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    elif kind == "DISCONNECT":
        ctx["disconnectStatusCode"] = 1001
        ctx["disconnectReason"] = "Going away"
        event["headers"] = {"Host": ctx["domainName"], "x-api-key": "", "x-restapi": ""}
    else:
        event["body"] = body if body is not None else ""
    return event


# ---------------------------------------------------------------------------------------
# The storage contract suite


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _session(cid: str, channel: str = "lobby", user: str | None = None, **kw: Any) -> Session:
    return Session(
        connection_id=cid,
        channel_name=channel,
        user_id=user,
        source_ip="198.51.100.7",
        user_agent="ua",
        stage="test",
        api_id="api",
        connected_at=kw.pop("connected_at", _now()),
        **kw,
    )


_E = TypeVar("_E", bound=BaseException)


def _raises(kind: type[_E], fn: Callable[[], Any]) -> _E:
    """Call ``fn``; return the ``kind`` exception it must raise."""
    try:
        fn()
    except kind as exc:
        return exc
    raise AssertionError(f"{kind.__name__} expected")


def _all(storage: Storage, **kw: Any) -> list[str]:
    return sorted(cid for batch in storage.iter_connection_ids(**kw) for cid in batch)


class StorageContract:
    """The behaviour every :class:`Storage` backend must have. Subclass; see module doc."""

    # pytest discovers test_* methods on subclasses named Test*.

    if pytest is not None:

        @pytest.fixture
        def storage_factory(self) -> Callable[[], Storage] | None:
            """Override to give each racing thread its own storage object."""
            return None

    def test_create_and_get_session(self, storage: Storage) -> None:
        s = _session("AAAAAAAAAAAAAAA=", user="7")
        storage.create_session(s)
        got = storage.get_session("AAAAAAAAAAAAAAA=")
        assert got is not None
        assert got.connection_id == s.connection_id
        assert got.channel_name == "lobby"
        assert got.user_id == "7"
        assert got.connected is True
        assert got.source_ip == "198.51.100.7"
        assert got.connected_at == s.connected_at
        assert storage.get_session("unknown-id-0000=") is None

    def test_ids_are_case_sensitive_and_keep_special_characters(self, storage: Storage) -> None:
        storage.create_session(_session("ab+/cdEFgh12345="))
        storage.create_session(_session("AB+/cdEFgh12345="))
        assert storage.get_session("ab+/cdEFgh12345=") is not None
        assert storage.get_session("AB+/cdEFgh12345=") is not None
        assert _all(storage) == ["AB+/cdEFgh12345=", "ab+/cdEFgh12345="]

    def test_create_session_replaces_existing(self, storage: Storage) -> None:
        storage.create_session(_session("conn-replace-01=", channel="a"), ["x"])
        storage.create_session(_session("conn-replace-01=", channel="b"))
        got = storage.get_session("conn-replace-01=")
        assert got is not None and got.channel_name == "b"
        assert storage.channels_of("conn-replace-01=") == ["b"]

    def test_create_session_subscribes_to_extra_channels(self, storage: Storage) -> None:
        storage.create_session(_session("conn-extra-0001=", channel="a"), ["b", "a", "c"])
        assert storage.channels_of("conn-extra-0001=") == ["a", "b", "c"]

    def test_mark_disconnected_bulk_and_idempotent(self, storage: Storage) -> None:
        for i in range(5):
            storage.create_session(_session(f"conn-bulk-{i:05d}="))
        at = _now()
        ids = [f"conn-bulk-{i:05d}=" for i in range(3)] + ["never-existed-0="]
        assert storage.mark_disconnected(ids, at) == 3
        assert storage.mark_disconnected(ids, at) == 0
        got = storage.get_session("conn-bulk-00000=")
        assert got is not None and got.connected is False and got.disconnected_at == at
        assert _all(storage) == ["conn-bulk-00003=", "conn-bulk-00004="]
        assert storage.channels_of("conn-bulk-00000=") == []
        assert storage.mark_disconnected([], at) == 0

    def test_mark_disconnected_spares_younger_sessions(self, storage: Storage) -> None:
        now = _now()
        storage.create_session(
            _session("grace-old-00001=", connected_at=now - timedelta(seconds=60))
        )
        storage.create_session(_session("grace-new-00001=", connected_at=now))
        ids = ["grace-old-00001=", "grace-new-00001=", "grace-none-0001="]
        cutoff = now - timedelta(seconds=30)
        assert storage.mark_disconnected(ids, now, connected_before=cutoff) == 1
        old, new = storage.get_session(ids[0]), storage.get_session(ids[1])
        assert old is not None and old.connected is False
        assert new is not None and new.connected is True
        assert storage.channels_of(ids[1]) == ["lobby"] and storage.channels_of(ids[0]) == []
        assert storage.mark_disconnected(ids, now, connected_before=cutoff) == 0

    def test_mark_disconnected_many(self, storage: Storage) -> None:
        ids = [f"conn-many-{i:06d}=" for i in range(1200)]
        for cid in ids:
            storage.create_session(_session(cid))
        assert storage.mark_disconnected(ids, _now()) == 1200
        assert _all(storage) == []

    def test_subscribe_unsubscribe(self, storage: Storage) -> None:
        storage.create_session(_session("conn-sub-000001=", channel="a"))
        assert storage.subscribe("conn-sub-000001=", "b") is True
        assert storage.subscribe("conn-sub-000001=", "b") is False
        assert storage.channels_of("conn-sub-000001=") == ["a", "b"]
        assert storage.unsubscribe("conn-sub-000001=", "b") is True
        assert storage.unsubscribe("conn-sub-000001=", "b") is False
        assert storage.subscribe("unknown-conn-01=", "b") is False
        storage.mark_disconnected(["conn-sub-000001="], _now())
        assert storage.subscribe("conn-sub-000001=", "c") is False

    def test_iter_connection_ids_targets(self, storage: Storage) -> None:
        storage.create_session(_session("c1-000000000000=", channel="a", user="1"))
        storage.create_session(_session("c2-000000000000=", channel="a", user="2"), ["b"])
        storage.create_session(_session("c3-000000000000=", channel="b", user="1"))
        storage.create_session(_session("c4-000000000000=", channel="a"))
        storage.create_session(_session("c5-000000000000=", channel="a", user="1"))
        storage.mark_disconnected(["c5-000000000000="], _now())
        assert _all(storage, channel="a") == [
            "c1-000000000000=",
            "c2-000000000000=",
            "c4-000000000000=",
        ]
        assert _all(storage, channel="b") == ["c2-000000000000=", "c3-000000000000="]
        assert _all(storage, user_id="1") == ["c1-000000000000=", "c3-000000000000="]
        assert _all(storage, channel="b", user_id="1") == ["c3-000000000000="]
        assert len(_all(storage)) == 4
        assert _all(storage, channel="nobody") == []

    def test_iter_connection_ids_batches(self, storage: Storage) -> None:
        ids = [f"conn-batch-{i:05d}=" for i in range(23)]
        for cid in ids:
            storage.create_session(_session(cid, channel="big"))
        batches = list(storage.iter_connection_ids(channel="big", batch_size=5))
        assert all(1 <= len(b) <= 5 for b in batches)
        flat = [cid for b in batches for cid in b]
        assert sorted(flat) == ids and len(flat) == len(set(flat))

    def test_presence(self, storage: Storage) -> None:
        storage.create_session(_session("p1-000000000000=", channel="room", user="1"))
        storage.create_session(_session("p2-000000000000=", channel="room", user="1"))
        storage.create_session(_session("p3-000000000000=", channel="room", user="2"))
        storage.create_session(_session("p4-000000000000=", channel="room"))
        storage.create_session(_session("p5-000000000000=", channel="room", user="3"))
        storage.mark_disconnected(["p5-000000000000="], _now())
        p = storage.presence("room")
        assert p.channel_name == "room"
        assert p.user_ids == frozenset({"1", "2"})
        assert p.connection_count == 4
        empty = storage.presence("empty")
        assert empty.user_ids == frozenset() and empty.connection_count == 0

    def test_token_spent_once(self, storage: Storage) -> None:
        now = _now()
        tok = Token(
            token_hash="a" * 64,
            user_id="42",
            created_at=now,
            expires_at=now + timedelta(seconds=60),
            channel="room",
            origin="https://example.com",
        )
        assert storage.spend_token(tok) is True
        assert storage.spend_token(tok) is False  # a replay
        assert storage.spend_token(attrs.evolve(tok, user_id="1")) is False  # same hash
        assert storage.spend_token(attrs.evolve(tok, token_hash="b" * 64)) is True

    def test_token_spent_once_under_concurrency(
        self, storage: Storage, storage_factory: Callable[[], Storage] | None
    ) -> None:
        now = _now()
        tok = Token(
            token_hash="f" * 64, user_id="9", created_at=now, expires_at=now + timedelta(seconds=60)
        )
        run_race(
            lambda s: True if s.spend_token(tok) else None,
            storage,
            storage_factory,
            threads=20,
            expect_winners=1,
        )

    def test_incr_counter(self, storage: Storage) -> None:
        start = _now()
        end = start + timedelta(seconds=60)
        assert storage.incr_counter("k", start, end) == 1
        assert storage.incr_counter("k", start, end) == 2
        assert storage.incr_counter("other", start, end) == 1
        assert storage.incr_counter("k", end, end + timedelta(seconds=60)) == 1

    def test_incr_counter_concurrent(
        self, storage: Storage, storage_factory: Callable[[], Storage] | None
    ) -> None:
        start = _now()
        end = start + timedelta(seconds=60)
        results = run_race(
            lambda s: s.incr_counter("race", start, end), storage, storage_factory, threads=10
        )
        assert sorted(results) == list(range(1, 11))

    def test_gateway_records(self, storage: Storage) -> None:
        """Only for storages that also keep provisioning records (``GatewayStore``, which
        is not part of the ``Storage`` contract)."""
        if not isinstance(storage, GatewayStore):
            pytest.skip("not a GatewayStore (optional)")
        assert storage.get_gateway("main") is None
        rec = GatewayRecord(
            name="main",
            api_id="abc123",
            region="eu-west-1",
            stage="prod",
            api_endpoint="wss://abc123.execute-api.eu-west-1.amazonaws.com/prod",
            management_endpoint="https://abc123.execute-api.eu-west-1.amazonaws.com/prod",
            resources={"api": "abc123", "route:$default": "r1"},
            spec_hash="h",
            status="ready",
            updated_at=_now(),
        )
        storage.save_gateway(rec)
        assert storage.get_gateway("main") == rec
        rec2 = GatewayRecord(
            name="main", api_id="abc123", resources={"api": "abc123"}, status="partial"
        )
        storage.save_gateway(rec2)
        got = storage.get_gateway("main")
        assert got is not None and got.resources == {"api": "abc123"} and got.status == "partial"

    # --- $connect in one transaction (counters, spent token, session) --------------

    def _connect_fixture(self, storage: Storage, hash_char: str) -> tuple[Token, CounterHit]:
        now = _now()
        token = Token(
            token_hash=hash_char * 64,
            user_id="7",
            created_at=now,
            expires_at=now + timedelta(seconds=60),
        )
        hit = CounterHit(
            key=f"connect:ip:{hash_char}",
            window_start=now,
            expires_at=now + timedelta(seconds=60),
            limit=5,
        )
        return token, hit

    @staticmethod
    def _plan(
        cid: str,
        token: Token | None,
        counters: tuple[CounterHit, ...],
        admit: Callable[[Token | None, CountFunc], Admission] | None = None,
    ) -> ConnectPlan:
        def default_admit(token: Token | None, count: CountFunc) -> Admission:
            user = token.user_id if token is not None else None
            return Admission(session=_session(cid, user=user), channels=("extra",))

        return ConnectPlan(
            connection_id=cid,
            now=_now(),
            admit=admit or default_admit,
            token=token,
            counters=counters,
        )

    @staticmethod
    def _counter_now(storage: Storage, hit: CounterHit) -> int:
        """The counter's value (this adds one, so subtract it)."""
        return storage.incr_counter(hit.key, hit.window_start, hit.expires_at) - 1

    def test_connect_stores_session_channels_and_spends_token(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "3")
        seen: list[Token | None] = []

        def admit(token: Token | None, count: CountFunc) -> Admission:
            seen.append(token)
            return Admission(
                session=_session("conn-connect-01=", user=token.user_id if token else None),
                channels=("extra",),
            )

        admission = storage.connect(self._plan("conn-connect-01=", token, (hit,), admit))
        assert seen[0] == token
        assert admission.session.user_id == "7"
        got = storage.get_session("conn-connect-01=")
        assert got is not None and got.connected and got.user_id == "7"
        assert storage.channels_of("conn-connect-01=") == ["extra", "lobby"]
        assert storage.spend_token(token) is False  # spent
        assert self._counter_now(storage, hit) == 1

    def test_connect_refusal_keeps_token_taken_and_attempt_counted(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "4")

        def refuse(token: Token | None, count: CountFunc) -> Admission:
            raise ChannelForbidden()

        _raises(
            ChannelForbidden,
            lambda: storage.connect(self._plan("conn-connect-02=", token, (hit,), refuse)),
        )
        assert storage.get_session("conn-connect-02=") is None
        assert storage.channels_of("conn-connect-02=") == []
        assert storage.spend_token(token) is False  # burnt
        assert self._counter_now(storage, hit) == 1  # counted

    def test_connect_counts_inside_admit(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "5")
        user_hit = attrs.evolve(hit, key="connect:user:7", limit=0, retry_after=9)

        def admit(token: Token | None, count: CountFunc) -> Admission:
            count(user_hit)  # past its limit of 0
            raise AssertionError("not reached")

        assert (
            _raises(
                RateLimited,
                lambda: storage.connect(self._plan("conn-connect-03=", token, (hit,), admit)),
            ).retry_after
            == 9
        )
        assert storage.get_session("conn-connect-03=") is None
        assert self._counter_now(storage, user_hit) == 1
        assert self._counter_now(storage, hit) == 1

    def test_connect_rate_limited_first_leaves_token(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "6")
        full = attrs.evolve(hit, limit=0)
        _raises(
            RateLimited,
            lambda: storage.connect(self._plan("conn-connect-04=", token, (full,))),
        )
        assert storage.get_session("conn-connect-04=") is None
        assert self._counter_now(storage, full) == 1
        assert storage.spend_token(token) is True  # never spent

    def test_connect_on_live_session_is_refused_and_changes_nothing(self, storage: Storage) -> None:
        storage.create_session(_session("conn-connect-05=", channel="a", user="42"), ["x"])
        before = storage.get_session("conn-connect-05=")
        token, hit = self._connect_fixture(storage, "7")
        _raises(
            ConnectionExists,
            lambda: storage.connect(self._plan("conn-connect-05=", token, (hit,))),
        )
        assert storage.get_session("conn-connect-05=") == before
        assert storage.channels_of("conn-connect-05=") == ["a", "x"]
        assert self._counter_now(storage, hit) == 0  # rolled back
        assert storage.spend_token(token) is True  # not spent
        # anonymous too
        _raises(ConnectionExists, lambda: storage.connect(self._plan("conn-connect-05=", None, ())))
        assert storage.get_session("conn-connect-05=") == before

    def test_connect_replaces_a_disconnected_session(self, storage: Storage) -> None:
        storage.create_session(_session("conn-connect-06=", channel="a", user="42"), ["x"])
        storage.mark_disconnected(["conn-connect-06="], _now())
        storage.connect(self._plan("conn-connect-06=", None, ()))
        got = storage.get_session("conn-connect-06=")
        assert got is not None and got.connected and got.user_id is None
        assert storage.channels_of("conn-connect-06=") == ["extra", "lobby"]

    def test_connect_error_rolls_everything_back(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "8")

        def broken(token: Token | None, count: CountFunc) -> Admission:
            raise RuntimeError("a bug, not a refusal")

        _raises(
            RuntimeError,
            lambda: storage.connect(self._plan("conn-connect-07=", token, (hit,), broken)),
        )
        assert storage.get_session("conn-connect-07=") is None
        assert storage.spend_token(token) is True  # rolled back
        assert self._counter_now(storage, hit) == 0

    def test_connect_race_on_one_id_has_one_winner(
        self, storage: Storage, storage_factory: Callable[[], Storage] | None
    ) -> None:
        def attempt(s: Storage) -> str | None:
            try:
                s.connect(self._plan("conn-connect-08=", None, ()))
            except ConnectionExists:
                return None
            return "won"

        run_race(attempt, storage, storage_factory, threads=8, expect_winners=1)
        assert storage.channels_of("conn-connect-08=") == ["extra", "lobby"]

    def test_iter_connected_before(self, storage: Storage) -> None:
        now = _now()
        for i in range(7):
            storage.create_session(
                _session(f"conn-age-{i:06d}=", connected_at=now - timedelta(minutes=i))
            )
        storage.mark_disconnected(["conn-age-000005="], now)
        batches = list(storage.iter_connected_before(now - timedelta(seconds=90), batch_size=2))
        assert all(1 <= len(b) <= 2 for b in batches)
        ids = [cid for b in batches for cid in b]
        # connected 2, 3, 4 and 6 minutes ago; 5 is disconnected; 0 and 1 are too young
        assert sorted(ids) == [f"conn-age-{i:06d}=" for i in (2, 3, 4, 6)]
        assert len(set(ids)) == len(ids)

        def ids_of(**bounds: str) -> list[str]:
            cutoff = now - timedelta(seconds=90)
            got = storage.iter_connected_before(cutoff, batch_size=2, **bounds)
            return sorted(cid for batch in got for cid in batch)

        # after= and upto= split the same ids at any point: each id exactly once
        for split in ("", "conn-age-000003=", "conn-age-0000035", "conn-age-000006=", "zzz"):
            above, below = ids_of(after=split), ids_of(upto=split)
            assert not set(above) & set(below)
            assert sorted(above + below) == sorted(ids)
        assert ids_of(after="conn-age-000003=") == ["conn-age-000004=", "conn-age-000006="]
        assert ids_of(upto="conn-age-000003=") == ["conn-age-000002=", "conn-age-000003="]

    def test_connect_with_a_spent_token_gets_none(self, storage: Storage) -> None:
        token, hit = self._connect_fixture(storage, "9")
        assert storage.spend_token(token) is True
        seen: list[Token | None] = []

        def admit(got: Token | None, count: CountFunc) -> Admission:
            seen.append(got)
            raise ChannelForbidden()  # what the core does with a replay: refuse

        _raises(
            ChannelForbidden,
            lambda: storage.connect(self._plan("conn-connect-09=", token, (hit,), admit)),
        )
        assert seen == [None]
        assert self._counter_now(storage, hit) == 1  # the replay counted

    def test_cleanup(self, storage: Storage) -> None:
        now = _now()
        storage.spend_token(
            Token(
                token_hash="1" * 64,
                user_id="1",
                created_at=now - timedelta(hours=1),
                expires_at=now - timedelta(minutes=1),
            )
        )
        storage.spend_token(
            Token(
                token_hash="2" * 64,
                user_id="1",
                created_at=now,
                expires_at=now + timedelta(minutes=1),
            )
        )
        storage.create_session(_session("old-conn-000000=", connected_at=now - timedelta(hours=3)))
        storage.create_session(_session("new-conn-000000=", connected_at=now))
        storage.create_session(_session("gone-conn-00000=", connected_at=now - timedelta(days=3)))
        storage.mark_disconnected(["gone-conn-00000="], now - timedelta(days=2))
        storage.incr_counter("old", now - timedelta(hours=2), now - timedelta(hours=1))
        dry = storage.cleanup(now, dry_run=True)
        assert (dry.expired_tokens, dry.stale_sessions, dry.old_disconnected, dry.counters) == (
            1,
            1,
            1,
            1,
        )
        assert storage.get_session("gone-conn-00000=") is not None
        report = storage.cleanup(now)
        assert report == dry
        assert storage.get_session("gone-conn-00000=") is None
        old = storage.get_session("old-conn-000000=")
        assert old is not None and old.connected is False
        assert _all(storage) == ["new-conn-000000="]
        kept = Token(token_hash="2" * 64, user_id="1", created_at=now, expires_at=now)
        assert storage.spend_token(kept) is False  # not yet expired: kept
        again = storage.cleanup(now)
        assert (again.expired_tokens, again.stale_sessions, again.old_disconnected) == (0, 0, 0)

    # --- connection attributes -----------------------------------------------------

    def test_session_attributes(self, storage: Storage) -> None:
        attrs_ = {"device": "mobile", "locale": "de-CH", "app": "ünïcode ✓"}
        storage.create_session(_session("attr-mobile-001=", channel="a", attributes=attrs_))
        storage.create_session(
            _session("attr-desk-00001=", channel="a", attributes={"device": "desktop"})
        )
        storage.create_session(_session("attr-none-00001=", channel="b"))
        storage.create_session(
            _session("attr-mobile-002=", channel="b", user="1", attributes={"device": "mobile"})
        )
        got = storage.get_session("attr-mobile-001=")
        assert got is not None and got.attributes == attrs_
        none = storage.get_session("attr-none-00001=")
        assert none is not None and none.attributes == {}
        mobile = {"device": "mobile"}
        assert _all(storage, attributes=mobile) == ["attr-mobile-001=", "attr-mobile-002="]
        assert _all(storage, channel="a", attributes=mobile) == ["attr-mobile-001="]
        assert _all(storage, user_id="1", attributes=mobile) == ["attr-mobile-002="]
        assert _all(storage, attributes={"device": "mobile", "locale": "de-CH"}) == [
            "attr-mobile-001="
        ]
        assert _all(storage, attributes={"device": "tablet"}) == []
        assert _all(storage, attributes={}) == sorted(
            ["attr-mobile-001=", "attr-desk-00001=", "attr-none-00001=", "attr-mobile-002="]
        )
        storage.mark_disconnected(["attr-mobile-001="], _now())
        assert _all(storage, attributes=mobile) == ["attr-mobile-002="]

    def test_user_sessions(self, storage: Storage) -> None:
        now = _now()
        storage.create_session(
            _session("us-b-0000000000=", channel="a", user="1", connected_at=now)
        )
        storage.create_session(
            _session("us-a-0000000000=", channel="a", user="1", connected_at=now)
        )
        storage.create_session(
            _session(
                "us-c-0000000000=", channel="b", user="1", connected_at=now - timedelta(seconds=5)
            )
        )
        storage.create_session(_session("us-d-0000000000=", channel="a", user="2"))
        storage.create_session(_session("us-e-0000000000=", channel="a", user="1"))
        storage.mark_disconnected(["us-e-0000000000="], now)
        ids = [s.connection_id for s in storage.user_sessions("1")]
        assert ids == ["us-c-0000000000=", "us-a-0000000000=", "us-b-0000000000="]
        in_a = [s.connection_id for s in storage.user_sessions("1", channel="a")]
        assert in_a == ["us-a-0000000000=", "us-b-0000000000="]
        assert storage.user_sessions("1", channel="nowhere") == []
        assert storage.user_sessions("3") == []
        assert len(storage.user_sessions("1", limit=1)) == 1

    # --- channel history -----------------------------------------------------------

    def test_history_append_and_read(self, storage: Storage) -> None:
        now = _now()
        empty = storage.read_history("room", now)
        assert (empty.epoch, empty.offset, empty.messages) == ("", 0, ())
        payloads = [b'{"n":%d}' % i for i in range(5)]
        positions = [storage.append_history("room", p, now) for p in payloads]
        epoch = positions[0][1]
        assert 1 <= len(epoch) <= 16 and all(c.isalnum() or c in "-_" for c in epoch)
        assert positions == [(i, epoch) for i in range(1, 6)]
        page = storage.read_history("room", now)
        assert (page.channel, page.epoch, page.offset) == ("room", epoch, 5)
        assert [m.payload for m in page.messages] == payloads
        assert [m.offset for m in page.messages] == [1, 2, 3, 4, 5]
        assert all(m.epoch == epoch and m.channel == "room" for m in page.messages)
        assert page.messages[0].created_at == now
        since = storage.read_history("room", now, since=2)
        assert [m.offset for m in since.messages] == [3, 4, 5]
        assert [m.offset for m in storage.read_history("room", now, since=1, limit=2).messages] == [
            2,
            3,
        ]
        assert [m.offset for m in storage.read_history("room", now, limit=2).messages] == [4, 5]
        assert storage.read_history("room", now, since=5).messages == ()
        other = storage.append_history("other", b"x", now)
        assert other[0] == 1
        assert storage.read_history("room", now).offset == 5

    def test_history_payloads_round_trip(self, storage: Storage) -> None:
        now = _now()
        big = bytes(range(256)) * 400  # 100 KiB, every byte value
        for payload in (b"", b"\x00\xff\xfe", "ünïcode ✓".encode(), big):
            offset, _ = storage.append_history("bin", payload, now)
            got = storage.read_history("bin", now, since=offset - 1, limit=1).messages
            assert got[0].payload == payload

    def test_history_trimmed_by_size(self, storage: Storage) -> None:
        now = _now()
        for i in range(1, 61):
            storage.append_history("sized", b"%d" % i, now, size=10)
        kept = [m.offset for m in storage.read_history("sized", now, limit=1000).messages]
        assert kept[-10:] == list(range(51, 61))
        assert kept == list(range(kept[0], 61)) and len(kept) <= 10 + 16

    def test_history_ttl_and_cleanup(self, storage: Storage) -> None:
        now = _now()
        storage.append_history("ttl", b"old", now - timedelta(seconds=120), ttl_seconds=60)
        storage.append_history("ttl", b"new", now, ttl_seconds=60)
        storage.append_history("keep", b"forever", now - timedelta(days=30))
        page = storage.read_history("ttl", now)
        assert [m.payload for m in page.messages] == [b"new"] and page.offset == 2
        assert storage.read_history("ttl", now, since=0).messages[0].offset == 2
        assert storage.cleanup(now, dry_run=True).history_messages == 1
        assert storage.cleanup(now).history_messages == 1
        assert storage.cleanup(now).history_messages == 0
        later = now + timedelta(seconds=61)
        assert storage.read_history("ttl", later).messages == ()
        assert storage.read_history("ttl", later).offset == 2
        assert [m.payload for m in storage.read_history("keep", later).messages] == [b"forever"]

    def test_history_reset_starts_new_epoch(self, storage: Storage) -> None:
        now = _now()
        _, first = storage.append_history("reset", b"a", now)
        storage.append_history("reset", b"b", now)
        storage.reset_history("reset")
        page = storage.read_history("reset", now)
        assert (page.epoch, page.offset, page.messages) == ("", 0, ())
        offset, second = storage.append_history("reset", b"c", now)
        assert offset == 1 and second != first
        storage.reset_history("never-had-history")

    def test_history_concurrent_appends(
        self, storage: Storage, storage_factory: Callable[[], Storage] | None
    ) -> None:
        now = _now()
        results = run_race(
            lambda s: s.append_history("race", b"m", now, size=100),
            storage,
            storage_factory,
            threads=10,
        )
        assert sorted(o for o, _ in results) == list(range(1, 11))
        assert len({e for _, e in results}) == 1
        page = storage.read_history("race", now)
        assert [m.offset for m in page.messages] == list(range(1, 11))

    # --- keyset pages and durable send jobs -----------------------------------------

    def test_recipient_pages_and_splits(self, storage: Storage) -> None:
        ids = [f"conn-page-{i:05d}=" for i in range(23)]
        for cid in ids:
            storage.create_session(_session(cid, channel="big", user="1" if cid < ids[5] else None))
        storage.create_session(_session("other-chan-0000=", channel="small"))
        storage.mark_disconnected([ids[7]], _now())
        live = [cid for cid in ids if cid != ids[7]]
        assert storage.count_recipients(channel="big") == 22
        assert storage.count_recipients() == 23
        assert storage.count_recipients(user_id="1") == 5
        assert storage.count_recipients(channel="big", user_id="1") == 5
        got: list[str] = []
        cursor: str | None = None
        while True:
            page, last = storage.recipient_page(channel="big", after=cursor, limit=4)
            if not page:
                assert last is None
                break
            assert len(page) <= 4 and last is not None
            got += page
            cursor = last
        assert sorted(got) == live and len(got) == len(set(got))
        assert storage.recipient_page(channel="nobody") == ([], None)
        assert storage.recipient_page(channel="big", user_id="1", limit=100)[0] != []
        splits = storage.recipient_splits(channel="big", every=5)
        assert len(splits) == 4  # 22 recipients: 5 + 5 + 5 + 5 + 2
        bounds = [None, *splits, None]
        shards = []
        for lower, upper in itertools.pairwise(bounds):
            page, _ = storage.recipient_page(channel="big", after=lower, upto=upper, limit=100)
            shards.append(page)
        assert [len(p) for p in shards] == [5, 5, 5, 5, 2]
        assert sorted(cid for p in shards for cid in p) == live
        assert storage.recipient_splits(channel="big", every=22) == []
        assert len(storage.recipient_splits(every=10)) == 2

    def test_recipient_methods_filter_by_attributes(self, storage: Storage) -> None:
        for i in range(6):
            device = {"device": "mobile" if i % 2 else "desktop"}
            storage.create_session(
                _session(f"conn-attr-{i:05d}=", channel="att", attributes=device)
            )
        mobile = {"device": "mobile"}
        assert storage.count_recipients(channel="att", attributes=mobile) == 3
        assert storage.count_recipients(attributes=mobile) == 3
        page, _ = storage.recipient_page(channel="att", attributes=mobile, limit=10)
        assert sorted(page) == ["conn-attr-00001=", "conn-attr-00003=", "conn-attr-00005="]
        page, _ = storage.recipient_page(attributes={"device": "tv"}, limit=10)
        assert page == []
        assert len(storage.recipient_splits(channel="att", attributes=mobile, every=1)) == 2

    def _part(self, job: str, index: int = 0, **kw: Any) -> JobPart:
        now = kw.pop("now", _now())
        return JobPart(
            job_id=job,
            index=index,
            target={"channel": "room"},
            created_at=now,
            updated_at=now,
            **kw,
        )

    def test_job_parts_create_get_start(self, storage: Storage) -> None:
        assert storage.get_job_parts("job-unknown") == []
        assert storage.start_job_part("job-unknown", 0, _now()) is None
        assert storage.create_job_parts([self._part("job-a")]) == 1
        assert (
            storage.create_job_parts([self._part("job-a"), self._part("job-a", 2, upper="9")]) == 1
        )
        parts = storage.get_job_parts("job-a")
        assert [p.index for p in parts] == [0, 2]
        assert parts[0].target == {"channel": "room"} and parts[0].status == "pending"
        assert parts[1].upper == "9" and parts[1].lower is None and parts[1].cursor is None
        started = storage.start_job_part("job-a", 0, _now())
        assert started is not None and started.status == "running" and started.runs == 1
        again = storage.start_job_part("job-a", 0, _now())
        assert again is not None and again.runs == 2
        assert storage.get_job_parts("job-a")[0].runs == 2

    def test_job_checkpoint_compare_and_set(self, storage: Storage) -> None:
        storage.create_job_parts([self._part("job-b")])
        one = JobCounts(recipients=3, delivered=2, gone=1)
        now = _now()
        # not running yet: refused
        assert not storage.checkpoint_job_part(
            "job-b", 0, expected_cursor=None, cursor="1", add=one, now=now
        )
        storage.start_job_part("job-b", 0, now)
        assert storage.checkpoint_job_part(
            "job-b", 0, expected_cursor=None, cursor="1", add=one, now=now, expected=9
        )
        # a second worker still at the old cursor loses
        assert not storage.checkpoint_job_part(
            "job-b", 0, expected_cursor=None, cursor="2", add=one, now=now
        )
        assert storage.checkpoint_job_part(
            "job-b", 0, expected_cursor="1", cursor="2", add=one, now=now, first_error="E1"
        )
        assert storage.checkpoint_job_part(
            "job-b",
            0,
            expected_cursor="2",
            cursor="2",
            add=JobCounts(ambiguous=1),
            now=now,
            first_error="E2",
            status="done",
        )
        (part,) = storage.get_job_parts("job-b")
        assert part.status == "done" and part.finished_at is not None
        assert part.cursor == "2" and part.expected == 9 and part.first_error == "E1"
        assert part.counts == JobCounts(recipients=6, delivered=4, gone=2, ambiguous=1)
        # finished: no more checkpoints, and starting it changes nothing
        assert not storage.checkpoint_job_part(
            "job-b", 0, expected_cursor="2", cursor="3", add=one, now=now
        )
        same = storage.start_job_part("job-b", 0, now)
        assert same is not None and same.runs == 1 and same.status == "done"

    def test_delete_jobs(self, storage: Storage) -> None:
        now = _now()
        old = now - timedelta(days=2)
        storage.create_job_parts(
            [self._part("job-old", 0, now=old), self._part("job-old", 1, now=old)]
        )
        storage.create_job_parts([self._part("job-mixed", 0, now=old), self._part("job-mixed", 1)])
        storage.create_job_parts([self._part("job-new", 0)])
        cutoff = now - timedelta(days=1)
        assert storage.delete_jobs(cutoff, dry_run=True) == 1
        assert len(storage.get_job_parts("job-old")) == 2
        assert storage.delete_jobs(cutoff) == 1
        assert storage.get_job_parts("job-old") == []
        assert len(storage.get_job_parts("job-mixed")) == 2
        assert len(storage.get_job_parts("job-new")) == 1

    def test_job_checkpoint_race_one_winner(
        self, storage: Storage, storage_factory: Callable[[], Storage] | None
    ) -> None:
        storage.create_job_parts([self._part("job-race")])
        storage.start_job_part("job-race", 0, _now())

        def step(s: Storage) -> bool | None:
            ok = s.checkpoint_job_part(
                "job-race",
                0,
                expected_cursor=None,
                cursor="5",
                add=JobCounts(delivered=5),
                now=_now(),
            )
            return True if ok else None

        run_race(step, storage, storage_factory, threads=4, expect_winners=1)
        (part,) = storage.get_job_parts("job-race")
        assert part.counts.delivered == 5


def run_race(
    fn: Callable[[Storage], Any],
    storage: Storage,
    factory: Callable[[], Storage] | None,
    *,
    threads: int,
    expect_winners: int | None = None,
) -> list[Any]:
    """Run ``fn`` in ``threads`` threads released at once; return their results.

    With ``expect_winners``, assert that exactly that many returned a non-``None`` value.
    """
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        target = factory() if factory is not None else storage
        try:
            barrier.wait(timeout=30)
            value = fn(target)
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + 60
    for t in pool:
        t.join(max(0.1, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if expect_winners is not None:
        winners = [r for r in results if r is not None]
        assert len(winners) == expect_winners, f"{len(winners)} winners, expected {expect_winners}"
    return results
