"""Scale benchmark of the local gateway: idle connections, memory, broadcast rate.

Processes (all on loopback):

* the gateway: ``python -m apigw_ws_core.local`` (via :class:`GatewayProcess`);
* optionally a trivial aiohttp backend answering every integration call 200
  (``--backend``, the default; ``--no-backend`` runs without a ``$connect`` route);
* a WebSocket client process holding N idle connections (websockets asyncio client,
  compression off, no pings) and counting what it receives;
* this driver process, which broadcasts through the management API twice:
  with boto3 ``post_to_connection`` (signed, sequential or threaded) and with a
  raw aiohttp client (fake SigV4 header, bounded concurrency).

Reported: gateway RSS per connection (from ``/_local/stats``, i.e.
``/proc/self/statm``), connect rate, and for each broadcast the posting rate
and the time until the client received every message.

Usage::

    .venv/bin/python benchmarks/local_scale.py --connections 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import quote

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from apigw_ws_core.local.testing import GatewayProcess, management_client

FAKE_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


def raise_nofile() -> int:
    """Raise this process's soft open-files limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- backend process


def backend_main(pipe: Connection) -> None:
    """A trivial HTTP backend: 200 with an empty body for every request."""
    from aiohttp import web

    raise_nofile()

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def serve() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        pipe.send(runner.addresses[0][1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        await runner.cleanup()

    asyncio.run(serve())


# --------------------------------------------------------------------------- client process


def client_main(pipe: Connection, url: str, count: int, concurrency: int) -> None:
    """Hold ``count`` connections; on request, wait for one message per connection."""
    from websockets.asyncio.client import connect

    raise_nofile()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        sockets: list[Any] = []
        failures = 0
        received: dict[str, int] = {}
        first_ns: dict[str, int] = {}
        last_ns: dict[str, int] = {}
        max_latency: dict[str, int] = {}
        changed = asyncio.Event()

        async def open_one() -> None:
            nonlocal failures
            async with gate:
                for attempt in range(5):
                    try:
                        ws = await connect(
                            url,
                            compression=None,
                            ping_interval=None,
                            open_timeout=120,
                            close_timeout=5,
                            max_queue=4,
                        )
                    except (OSError, TimeoutError, Exception):
                        await asyncio.sleep(0.05 * (attempt + 1))
                        continue
                    sockets.append(ws)
                    return
                failures += 1

        async def reader(ws: Any) -> None:
            try:
                async for message in ws:
                    now = time.monotonic_ns()
                    data = json.loads(message)
                    tag = data["tag"]
                    received[tag] = received.get(tag, 0) + 1
                    first_ns.setdefault(tag, now)
                    last_ns[tag] = now
                    latency = now - data["t"]
                    if latency > max_latency.get(tag, 0):
                        max_latency[tag] = latency
                    changed.set()
            except Exception:
                return

        started = time.monotonic()
        await asyncio.gather(*(open_one() for _ in range(count)))
        elapsed = time.monotonic() - started
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pipe.send(("connected", len(sockets), failures, elapsed, time.process_time()))
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command[0] == "expect":
                tag, timeout = command[1], command[2]
                deadline = time.monotonic() + timeout
                while received.get(tag, 0) < len(sockets) and time.monotonic() < deadline:
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 1.0)
                pipe.send(
                    (
                        "received",
                        received.get(tag, 0),
                        first_ns.get(tag, 0),
                        last_ns.get(tag, 0),
                        max_latency.get(tag, 0),
                    )
                )
            elif command[0] == "close":
                started = time.monotonic()
                for start in range(0, len(sockets), 500):
                    await asyncio.gather(
                        *(ws.close() for ws in sockets[start : start + 500]),
                        return_exceptions=True,
                    )
                for task in readers:
                    task.cancel()
                pipe.send(("closed", time.monotonic() - started))
                return

    asyncio.run(run())


# --------------------------------------------------------------------------- broadcasts


def payload(tag: str) -> bytes:
    """A ~200-byte JSON message carrying its send time (CLOCK_MONOTONIC is system-wide)."""
    return json.dumps({"tag": tag, "t": time.monotonic_ns(), "pad": "x" * 150}).encode()


def broadcast_boto3(endpoint: str, ids: list[str], tag: str, threads: int) -> tuple[float, int]:
    """Post one message per connection with boto3; return (seconds, errors)."""
    clients = [management_client(endpoint, max_attempts=5) for _ in range(max(1, threads))]
    errors = 0

    def post_slice(index: int) -> int:
        client = clients[index]
        failed = 0
        for cid in ids[index::threads]:
            try:
                client.post_to_connection(ConnectionId=cid, Data=payload(tag))
            except Exception:
                failed += 1
        return failed

    started = time.monotonic()
    if threads <= 1:
        errors = post_slice(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            errors = sum(pool.map(post_slice, range(threads)))
    return time.monotonic() - started, errors


def broadcast_aiohttp(
    endpoint: str, ids: list[str], tag: str, concurrency: int
) -> tuple[float, int]:
    """Post one message per connection with a raw aiohttp client; return (seconds, errors)."""
    import aiohttp

    async def run() -> tuple[float, int]:
        errors = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Authorization": FAKE_AUTH, "X-Amz-Date": "20260101T000000Z"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            queue: asyncio.Queue[str] = asyncio.Queue()
            for cid in ids:
                queue.put_nowait(cid)

            async def worker() -> None:
                nonlocal errors
                while not queue.empty():
                    cid = queue.get_nowait()
                    url = f"{endpoint}/@connections/{quote(cid, safe='')}"
                    async with session.post(url, data=payload(tag)) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.monotonic() - started, errors

    return asyncio.run(run())


# --------------------------------------------------------------------------- driver


def get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=120) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", "-n", type=int, default=10_000)
    parser.add_argument("--connect-concurrency", type=int, default=256)
    parser.add_argument("--boto3-threads", type=int, default=1)
    parser.add_argument("--aiohttp-concurrency", type=int, default=256)
    parser.add_argument(
        "--backend",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run a trivial HTTP backend for $connect/$disconnect (default) or no routes at all",
    )
    parser.add_argument("--skip-boto3", action="store_true")
    args = parser.parse_args()
    limit = raise_nofile()
    count = args.connections
    if count + 100 > limit:
        print(f"open-files limit {limit} is too low for {count} connections", file=sys.stderr)
        return 1
    ctx = multiprocessing.get_context("spawn")

    backend_pipe = backend_proc = None
    gateway_args = ["--log-level", "warning", "--idle-timeout", "3600"]
    if args.backend:
        backend_pipe, child = ctx.Pipe()
        backend_proc = ctx.Process(target=backend_main, args=(child,), daemon=True)
        backend_proc.start()
        backend_port = backend_pipe.recv()
        gateway_args += ["--backend", f"http://127.0.0.1:{backend_port}/ws/"]
    gateway = GatewayProcess(gateway_args).start()
    print(f"gateway pid {gateway.pid}: {gateway.ws_url}")
    print(f"mode: {'HTTP backend for $connect/$disconnect' if args.backend else 'no routes'}")
    time.sleep(0.5)
    base = gateway.stats()
    rss_before = base["rss_bytes"]

    client_pipe, child = ctx.Pipe()
    client = ctx.Process(
        target=client_main,
        args=(child, gateway.ws_url, count, args.connect_concurrency),
        daemon=True,
    )
    client.start()
    cpu_before = gateway.stats()["cpu_s"]
    kind, opened, failures, connect_s, client_cpu = client_pipe.recv()
    assert kind == "connected"
    time.sleep(1.0)
    stats = gateway.stats()
    rss_after = stats["rss_bytes"]
    per_conn = (rss_after - rss_before) / max(1, opened)
    print(
        f"connections opened: {opened} (failed: {failures}) in {connect_s:.2f} s "
        f"= {opened / connect_s:.0f} connects/s"
    )
    print(
        f"gateway open connections: {stats['connections']['open']}; CPU used while "
        f"connecting: gateway {stats['cpu_s'] - cpu_before:.1f} s, client {client_cpu:.1f} s"
    )
    print(
        f"gateway RSS: {rss_before / 2**20:.1f} MiB idle -> {rss_after / 2**20:.1f} MiB "
        f"with {opened} connections = {per_conn / 1024:.1f} KiB per connection"
    )

    listing = get_json(f"{gateway.base_url}/_local/connections")["connections"]
    ids = [c["connectionId"] for c in listing if c["state"] == "OPEN"]

    def run_broadcast(name: str, tag: str, fn: Any) -> None:
        gateway_cpu = gateway.stats()["cpu_s"]
        driver_cpu = time.process_time()
        started_ns = time.monotonic_ns()
        seconds, errors = fn(tag)
        driver_cpu = time.process_time() - driver_cpu
        client_pipe.send(("expect", tag, 120))
        _, got, _first, last, max_latency = client_pipe.recv()
        gateway_cpu = gateway.stats()["cpu_s"] - gateway_cpu
        delivered_s = (last - started_ns) / 1e9 if last else float("nan")
        print(
            f"broadcast via {name}: {len(ids)} posts in {seconds:.2f} s = "
            f"{len(ids) / seconds:.0f} posts/s, errors {errors}; client received {got}/{len(ids)}"
            f", all delivered {delivered_s:.2f} s after the first post, "
            f"max per-message latency {max_latency / 1e6:.0f} ms; CPU: sender "
            f"{driver_cpu:.1f} s, gateway {gateway_cpu:.1f} s"
        )

    if not args.skip_boto3:
        label = f"boto3 ({args.boto3_threads} thread{'s' if args.boto3_threads > 1 else ''})"
        run_broadcast(
            label,
            "boto3",
            lambda tag: broadcast_boto3(gateway.management_endpoint, ids, tag, args.boto3_threads),
        )
    run_broadcast(
        f"raw aiohttp ({args.aiohttp_concurrency} concurrent)",
        "aiohttp",
        lambda tag: broadcast_aiohttp(
            gateway.management_endpoint, ids, tag, args.aiohttp_concurrency
        ),
    )
    final = gateway.stats()
    print(
        f"gateway RSS after broadcasts: {final['rss_bytes'] / 2**20:.1f} MiB; counters: "
        f"{json.dumps(final['counters'])}"
    )

    client_pipe.send(("close",))
    _, close_s = client_pipe.recv()
    client.join(30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = gateway.stats()
        if after["connections"]["open"] == 0 and after["background_tasks"] == 0:
            break
        time.sleep(0.2)
    print(
        f"after the client closed: {after['counters']['disconnects']} disconnects handled, "
        f"{after['connections']['open']} connections open, RSS "
        f"{after['rss_bytes'] / 2**20:.1f} MiB"
    )
    stop_started = time.monotonic()
    gateway.stop(timeout=120)
    print(
        f"client closed {opened} connections in {close_s:.2f} s; gateway stopped in "
        f"{time.monotonic() - stop_started:.2f} s"
    )
    if backend_pipe is not None and backend_proc is not None:
        backend_pipe.send("stop")
        backend_proc.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
