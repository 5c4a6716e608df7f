"""Fan-out benchmark: one message to N connections through the local gateway.

Three processes share the machine: the local gateway (``python -m apigw_ws_core.local``),
the WebSocket clients (this file with ``--client``, N real connections that count what
they receive) and this process, the sender. For each management latency (0 ms and 20 ms
by default) it opens N connections, then broadcasts the same message with:

(a) a serial boto3 loop, as django-aws-api-gateway-websockets' ``send_message`` does
    (one client, ``post_to_connection`` per recipient);
(b) apigw-ws: ``WebSocketApp.send(everyone=True)`` (recipients streamed from storage,
    :class:`~apigw_ws_core.http1.ManagementApiTransport`, bounded concurrency);
(c) the ceiling: raw aiohttp POSTs with a constant (not computed) SigV4-shaped header, at
    two concurrencies; the better one is the ceiling;
(d) for reference, a urllib3 thread pool signing with the same cached SigV4 signer (the
    design apigw-ws did *not* choose).

Every variant must reach every client exactly once; the clients' counts are printed.
Then a fault run: 10% of the connections closed (their sessions still marked connected)
and 5% of management calls answered 429 by the gateway; apigw-ws must deliver exactly
once to every live connection, report the gone ones and mark them in one storage call.

Usage::

    .venv/bin/python benchmarks/fanout.py                      # 2,000 connections, 0 and 20 ms
    .venv/bin/python benchmarks/fanout.py -n 500 --latency-ms 20 --skip-boto3

This prints numbers; it asserts nothing (tests assert behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ACCESS_KEY = "AKIDBENCHMARK"
SECRET_KEY = "benchmark-secret"
STAGE = "bench"
FAKE_AUTH = (
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/us-east-1/execute-api/aws4_request, "
    f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}"
)


# --- the WebSocket clients (own process) ---------------------------------------------


async def _client(ws_url: str, n: int) -> None:
    """Open ``n`` connections, count received messages per tag, obey stdin commands."""
    import aiohttp

    counts: dict[str, Counter[int]] = defaultdict(Counter)
    conns: list[Any] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sem = asyncio.Semaphore(64)

    async def reader(index: int, ws: Any) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                counts[json.loads(msg.data)["tag"]][index] += 1

    async def open_one(index: int) -> None:
        async with sem:
            for attempt in range(5):
                try:
                    ws = await session.ws_connect(ws_url, autoping=False, max_msg_size=0)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2 * (attempt + 1))
            else:
                raise RuntimeError("could not connect")
            conns.append(ws)
            asyncio.get_running_loop().create_task(reader(index, ws))

    await asyncio.gather(*(open_one(i) for i in range(n)))
    print("ready", len(conns), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        cmd, _, arg = line.partition(" ")
        if cmd == "count":
            per = counts.get(arg, Counter())
            reply = {
                "received": sum(per.values()),
                "connections": len(per),
                "duplicates": sum(c - 1 for c in per.values() if c > 1),
            }
        elif cmd == "close":
            k = int(arg)
            await asyncio.gather(*(ws.close() for ws in conns[:k]))
            reply = {"closed": k}
        else:
            reply = {"error": line}
        print(json.dumps(reply), flush=True)
    for ws in conns:
        await ws.close()
    await session.close()


class Clients:
    """The client process, driven over stdin/stdout."""

    def __init__(self, ws_url: str, n: int):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client", ws_url, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"client process failed: {line!r}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def wait_count(self, tag: str, expected: int, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            got = self.ask(f"count {tag}")
            if got["received"] >= expected or time.monotonic() > end:
                time.sleep(0.2)  # let any duplicate arrive before the final count
                return self.ask(f"count {tag}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class GatewayProc:
    """The local gateway in its own process (optionally answering a share of POSTs 429)."""

    def __init__(self, latency_ms: float, p429: float = 0.0):
        from apigw_ws_core.local.testing import GatewayProcess

        args = ["--stage", STAGE, "--management-latency-ms", str(latency_ms)]
        args += ["--log-level", "WARNING", "--message-log-size", "1"]
        if p429:  # the gateway's own fault injection: every N-th POST answers 429
            args += ["--inject-429-every", str(round(1 / p429))]
        self.gw = GatewayProcess(args)
        self.gw.start()

    @property
    def endpoint(self) -> str:
        return self.gw.management_endpoint

    @property
    def ws_url(self) -> str:
        return self.gw.ws_url

    def open_ids(self) -> list[str]:
        return sorted(self.gw.connection_ids())

    def stats(self) -> dict[str, Any]:
        return self.gw.stats()

    def stop(self) -> None:
        self.gw.stop()


# --- the senders ---------------------------------------------------------------------------


def message(tag: str, size: int) -> bytes:
    body = {"tag": tag, "type": "broadcast", "text": ""}
    pad = size - len(json.dumps(body, separators=(",", ":")))
    body["text"] = "x" * max(0, pad)
    return json.dumps(body, separators=(",", ":")).encode()


def send_boto3(endpoint: str, ids: list[str], data: bytes) -> float:
    """(a) What django-aws-api-gateway-websockets does: one client, a serial loop."""
    import boto3

    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    start = time.perf_counter()
    for cid in ids:
        client.post_to_connection(Data=data, ConnectionId=cid)
    return time.perf_counter() - start


def make_app(endpoint: str, ids: list[str], concurrency: int | None, storage: Any = None) -> Any:
    """An app on memory storage holding ``ids``. ``concurrency``: calls in flight fixed at
    that many; ``None``: the ``Config`` defaults (adaptive, see ``send_max_concurrency``)."""
    from botocore.credentials import Credentials

    from apigw_ws_core.app import WebSocketApp
    from apigw_ws_core.config import Config
    from apigw_ws_core.http1 import ManagementApiTransport
    from apigw_ws_core.memory import MemoryStorage
    from apigw_ws_core.storage import Session

    storage = storage or MemoryStorage()
    now = datetime.now(UTC)
    for cid in ids:
        storage.create_session(Session(connection_id=cid, channel_name="all", connected_at=now))
    if concurrency is None:
        config = Config(secret="s")
    else:
        config = Config(secret="s", send_concurrency=concurrency, send_max_concurrency=concurrency)
    transport = ManagementApiTransport(
        endpoint,
        credentials=Credentials(ACCESS_KEY, SECRET_KEY),
        max_connections=max(config.send_concurrency, config.send_max_concurrency),
    )
    return WebSocketApp(storage=storage, transport=transport, config=config)


def send_raw(endpoint: str, ids: list[str], data: bytes, concurrency: int) -> float:
    """(c) The ceiling: aiohttp, no signing work, same gateway checks."""
    import aiohttp

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Authorization": FAKE_AUTH, "X-Amz-Date": "20260101T000000Z"}
        async with aiohttp.ClientSession(connector=connector) as session:
            it = iter(ids)

            async def worker() -> None:
                for cid in it:
                    url = f"{endpoint}/@connections/{quote(cid, safe='')}"
                    async with session.post(url, data=data, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"raw post answered {resp.status}")

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    return asyncio.run(run())


def send_raw_streams(endpoint: str, ids: list[str], data: bytes, concurrency: int) -> float:
    """(c) The ceiling, leaner: bare asyncio streams, request bytes built by formatting."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    host = f"{parts.hostname}:{parts.port}"
    head = (
        "POST {path} HTTP/1.1\r\nHost: " + host + "\r\nX-Amz-Date: 20260101T000000Z\r\n"
        "Authorization: " + FAKE_AUTH + "\r\nContent-Length: " + str(len(data)) + "\r\n\r\n"
    )

    async def run() -> float:
        it = iter(ids)

        async def worker() -> None:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            for cid in it:
                path = f"{parts.path}/@connections/{quote(cid, safe='')}"
                writer.write(head.format(path=path).encode() + data)
                raw = await reader.readuntil(b"\r\n\r\n")
                if raw[9:12] != b"200":
                    raise RuntimeError(f"raw post answered {raw[:12]!r}")
                for hline in raw.split(b"\r\n"):
                    if hline[:15].lower() == b"content-length:":
                        await reader.readexactly(int(hline[15:]))
            writer.close()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

    return asyncio.run(run())


def send_urllib3(endpoint: str, ids: list[str], data: bytes, threads: int) -> float:
    """(d) urllib3 thread pool + the same cached SigV4 signer (the rejected design)."""
    from urllib.parse import urlsplit

    import urllib3
    from botocore.credentials import Credentials

    from apigw_ws_core.signer import SigV4Signer
    from apigw_ws_core.transport import Payload

    parts = urlsplit(endpoint)
    host = f"{parts.hostname}:{parts.port}"
    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=threads, block=True)
    signer = SigV4Signer("us-east-1", host)
    creds = Credentials(ACCESS_KEY, SECRET_KEY).get_frozen_credentials()
    payload = Payload.of(data)
    lock = threading.Lock()

    def one(cid: str) -> None:
        path = f"{parts.path}/@connections/{quote(cid, safe='')}"
        with lock:
            headers = dict(signer.sign("POST", path, payload.sha256, creds))
        resp = pool.urlopen("POST", path, body=data, headers=headers, retries=False)
        if resp.status != 200:
            raise RuntimeError(f"urllib3 post answered {resp.status}")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, ids, chunksize=8))
    return time.perf_counter() - start


# --- the runs ---------------------------------------------------------------------------------


class Variant:
    """One way of broadcasting: its rates over the rounds and what the clients received."""

    def __init__(self, label: str):
        self.label = label
        self.rates: list[float] = []
        self.seconds: list[float] = []
        self.short: list[str] = []

    def add(self, posts: int, seconds: float, got: dict[str, Any], expected: int) -> None:
        self.rates.append(posts / seconds)
        self.seconds.append(seconds)
        if got["received"] != expected or got["duplicates"]:
            self.short.append(f"{got['received']}/{expected} received, {got['duplicates']} dup")

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def print(self, n: int) -> None:
        spread = ""
        if len(self.rates) > 1:
            spread = (
                f"  (min {min(self.rates):.0f}, max {max(self.rates):.0f}, {len(self.rates)} runs)"
            )
        ok = "every client got it exactly once" if not self.short else "; ".join(self.short)
        print(
            f"  {self.label:<46} {statistics.median(self.seconds):7.3f} s "
            f"{self.median:8.0f} posts/s{spread}  [{ok}]",
            flush=True,
        )


def run_latency(args: argparse.Namespace, latency: float) -> None:
    n = args.connections
    gw = GatewayProc(latency)
    clients = Clients(gw.ws_url, n)
    try:
        ids = gw.open_ids()
        print(
            f"\nmanagement latency {latency:g} ms, {len(ids)} connections, "
            f"{args.size}-byte message, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        variants: dict[str, Variant] = {}

        def run(key: str, label: str, fn: Any, count_sent: bool = False) -> None:
            variant = variants.setdefault(key, Variant(label))
            tag = f"{key}-{latency}-{len(variant.rates)}"
            result = fn(message(tag, args.size))
            if count_sent:  # a SendReport
                posts, seconds = result.delivered, result.elapsed
            else:
                posts, seconds = n, result
            variant.add(posts, seconds, clients.wait_count(tag, n), n)

        apps: dict[str, tuple[str, Any]] = {
            f"apigw{c}": (f"(b) apigw-ws fixed c={c}", make_app(gw.endpoint, ids, c))
            for c in args.concurrency
        }
        from apigw_ws_core.config import Config

        d = Config()
        apps["apigw-default"] = (
            f"(b) apigw-ws default (c={d.send_concurrency}->{d.send_max_concurrency} adaptive)",
            make_app(gw.endpoint, ids, None),
        )
        boto3_rounds = 0 if args.skip_boto3 else (args.rounds if latency == 0 else 1)
        for r in range(args.rounds):
            if r < boto3_rounds:
                run("boto3", "(a) boto3, serial loop", lambda d: send_boto3(gw.endpoint, ids, d))
            for key, (label, app) in apps.items():
                run(key, label, lambda d, app=app: app.send(d, everyone=True), count_sent=True)
            for c in args.raw_concurrency:
                run(
                    f"aiohttp{c}",
                    f"(c) raw aiohttp, unsigned, c={c}",
                    lambda d, c=c: send_raw(gw.endpoint, ids, d, c),
                )
                run(
                    f"streams{c}",
                    f"(c) raw asyncio streams, unsigned, c={c}",
                    lambda d, c=c: send_raw_streams(gw.endpoint, ids, d, c),
                )
            if not args.skip_urllib3:
                t = args.urllib3_threads
                run(
                    "urllib3",
                    f"(d) urllib3 pool, {t} threads, cached SigV4",
                    lambda d: send_urllib3(gw.endpoint, ids, d, t),
                )
        for _, app in apps.values():
            app.close()
        for variant in variants.values():
            variant.print(n)
        raw_keys = [k for k in variants if k.startswith(("aiohttp", "streams"))]
        raw = max(variants[k].median for k in raw_keys)
        # Per round, against the best raw variant of the same round: load that changes
        # between rounds moves both sides, so these ratios are steadier than the rates.
        rounds = len(variants[raw_keys[0]].rates)
        raw_by_round = [max(variants[k].rates[r] for k in raw_keys) for r in range(rounds)]
        for key, (label, _) in apps.items():
            ours = variants[key].median
            ratios = [100 * variants[key].rates[r] / raw_by_round[r] for r in range(rounds)]
            parts = [f"{label[4:]}:"]
            if "boto3" in variants:
                parts.append(f"{ours / variants['boto3'].median:.1f}x the boto3 serial loop,")
            parts.append(
                f"{min(ratios):.0f}-{max(ratios):.0f}% of the same round's raw ceiling "
                f"(median {statistics.median(ratios):.0f}%; ceiling median {raw:.0f} posts/s)"
            )
            print("  " + " ".join(parts), flush=True)
    finally:
        clients.stop()
        gw.stop()


def run_faults(args: argparse.Namespace) -> None:
    from apigw_ws_core.memory import MemoryStorage

    class CountingStorage(MemoryStorage):
        mark_calls = 0

        def mark_disconnected(self, connection_ids: Any, at: datetime) -> int:
            CountingStorage.mark_calls += 1
            return super().mark_disconnected(connection_ids, at)

    n = args.connections
    gw = GatewayProc(args.fault_latency_ms, p429=0.05)
    clients = Clients(gw.ws_url, n)
    try:
        all_ids = gw.open_ids()
        k = n // 10
        clients.ask(f"close {k}")
        deadline = time.monotonic() + 10
        while len(gw.open_ids()) > n - k and time.monotonic() < deadline:
            time.sleep(0.05)
        live = set(gw.open_ids())
        gone = set(all_ids) - live
        storage = CountingStorage()
        app = make_app(gw.endpoint, all_ids, None, storage)
        tag = "faults"
        report = app.send(message(tag, args.size), everyone=True)
        got = clients.wait_count(tag, len(live))
        stats = gw.stats()
        counters = stats.get("counters", stats)
        print(
            f"\nfaults: {n} sessions, {len(gone)} of them closed (410), 5% of POSTs answered 429, "
            f"latency {args.fault_latency_ms:g} ms",
            flush=True,
        )
        print(f"  report: {report.as_dict()}")
        print(
            f"  live connections {len(live)}: received {got['received']} on {got['connections']} "
            f"connections, {got['duplicates']} duplicates"
        )
        print(
            f"  gone reported {len(report.gone)} (expected {len(gone)}, same set: "
            f"{set(report.gone) == gone}); mark_disconnected calls: {CountingStorage.mark_calls}; "
            f"still connected in storage: "
            f"{sum(1 for cid in gone if storage.get_session(cid).connected)}"
        )
        injected = counters.get("management_injected_429", "?")
        print(f"  gateway injected 429s: {injected}", flush=True)
        app.close()
    finally:
        clients.stop()
        gw.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(_client(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--connections", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, action="append", default=None)
    parser.add_argument("--size", type=int, default=200, help="message bytes")
    parser.add_argument(
        "--concurrency", type=int, action="append", default=None, help="apigw-ws concurrency"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each fast variant")
    parser.add_argument("--raw-concurrency", type=int, action="append", default=None)
    parser.add_argument("--urllib3-threads", type=int, default=32)
    parser.add_argument("--skip-boto3", action="store_true")
    parser.add_argument("--skip-urllib3", action="store_true")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--fault-latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    args.latency_ms = args.latency_ms or [0.0, 20.0]
    args.raw_concurrency = args.raw_concurrency or [64, 256]
    args.concurrency = args.concurrency or [32, 64]
    print(
        f"fan-out benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cores; "
        "gateway, clients and sender in separate processes",
        flush=True,
    )
    for latency in args.latency_ms:
        run_latency(args, latency)
    if not args.skip_faults:
        run_faults(args)


if __name__ == "__main__":
    main()
