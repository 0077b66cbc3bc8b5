"""Egress proxy benchmark: bulk throughput and connect latency, direct vs through the proxy.

    /work/venv/bin/python bench/proxy_bench.py [--mib 256] [--conns 200] [--json PATH]

A stand-in server on 127.0.0.1 (its own process) serves both runs; the proxy
runs in this process, as it does inside hutch, and the measuring client runs in
a third process so that it does not share the proxy's interpreter lock. On a
two-core machine the three compete for CPU, so the burst latency includes
queueing behind the other two. The
server is allowed as an IP literal; nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

CHUNK = 1 << 20
RUNS = 5
SERIAL_ROUNDS = 50
DEADLINE = 300.0  # seconds for the whole client process


# -- server role -------------------------------------------------------------


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        command = self.rfile.readline().split()
        if command[:1] == [b"BULK"]:
            remaining = int(command[1])
            block = memoryview(bytes(CHUNK))
            while remaining > 0:
                n = min(remaining, CHUNK)
                self.connection.sendall(block[:n])
                remaining -= n
        elif command[:1] == [b"PING"]:
            self.wfile.write(b"PONG\n")
            self.wfile.flush()
            self.rfile.read()  # held open until the client closes


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def serve() -> None:
    with _Server(("127.0.0.1", 0), _Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


def sink() -> None:
    """Accepts connections and reads them to EOF: a cheap target for the hostile clients."""

    async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(drain, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(run())


# -- client role -------------------------------------------------------------


def _connect(port: int, proxy: str | None) -> socket.socket:
    if proxy is None:
        return socket.create_connection(("127.0.0.1", port))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(proxy)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("proxy closed the connection during CONNECT")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"proxy refused: {head[:200]!r}")
    return sock


def _bulk(port: int, proxy: str | None, size: int) -> float:
    buf = bytearray(256 * 1024)
    start = time.perf_counter()
    with _connect(port, proxy) as sock:
        sock.sendall(f"BULK {size}\n".encode())
        got = 0
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                raise RuntimeError(f"stream ended after {got} of {size} bytes")
            got += n
    return size / (time.perf_counter() - start)


async def _latencies(port: int, proxy: str | None, conns: int) -> list[float]:
    held: list[asyncio.StreamWriter] = []

    async def one() -> float:
        start = time.perf_counter()
        if proxy is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            reader, writer = await asyncio.open_unix_connection(proxy)
            writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"proxy refused: {head[:200]!r}")
        writer.write(b"PING\n")
        if await reader.readline() != b"PONG\n":
            raise RuntimeError("no PONG")
        held.append(writer)
        return time.perf_counter() - start

    try:
        async with asyncio.timeout(60):
            return list(await asyncio.gather(*(one() for _ in range(conns))))
    finally:
        for writer in held:
            writer.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _serial(port: int, proxy: str | None, rounds: int) -> list[float]:
    async def run() -> list[float]:
        out: list[float] = []
        for _ in range(rounds):
            out += await _latencies(port, proxy, 1)
        return out

    return asyncio.run(run())


def client(phase: str, port: int, proxy: str, size: int, conns: int) -> dict[str, float]:
    if phase == "bulk":
        deadline = time.monotonic() + DEADLINE
        direct: list[float] = []
        proxied: list[float] = []
        _bulk(port, None, min(size, 16 * CHUNK))  # warm-up, both paths
        _bulk(port, proxy, min(size, 16 * CHUNK))
        for _ in range(RUNS):
            if time.monotonic() > deadline:
                break
            direct.append(_bulk(port, None, size))
            proxied.append(_bulk(port, proxy, size))
        return {
            "direct_mib_s": statistics.median(direct) / CHUNK,
            "proxy_mib_s": statistics.median(proxied) / CHUNK,
        }
    lat_direct = asyncio.run(_latencies(port, None, conns))
    lat_proxy = asyncio.run(_latencies(port, proxy, conns))
    serial_direct = _serial(port, None, SERIAL_ROUNDS)
    serial_proxy = _serial(port, proxy, SERIAL_ROUNDS)
    return {
        "direct_p50_ms": _pct(lat_direct, 0.50) * 1e3,
        "direct_p95_ms": _pct(lat_direct, 0.95) * 1e3,
        "proxy_p50_ms": _pct(lat_proxy, 0.50) * 1e3,
        "proxy_p95_ms": _pct(lat_proxy, 0.95) * 1e3,
        "serial_direct_p50_ms": _pct(serial_direct, 0.50) * 1e3,
        "serial_proxy_p50_ms": _pct(serial_proxy, 0.50) * 1e3,
    }


# -- hostile role: ClientHellos trickled as 1-byte TLS records -----------------

TRICKLE_RECORDS = 8  # 48 bytes per write ...
TRICKLE_EVERY = 0.002  # ... every 2 ms, per connection (and between its connections)


def _trickled_hello() -> Iterator[bytes]:
    """A ClientHello announcing 64 KiB - 1 bytes, each byte in its own TLS record."""
    message = b"\x01\x00\xff\xfb" + bytes(0xFFFB)
    for i in range(0, len(message), TRICKLE_RECORDS):
        yield b"".join(b"\x16\x03\x01\x00\x01" + message[j : j + 1] for j in range(i, i + TRICKLE_RECORDS))


def hostile(port: int, proxy: str, conns: int, seconds: float, pace: float) -> dict[str, float]:
    """`conns` connections, each trickling a ClientHello until the proxy gives up, then again;
    one write (and each reconnection) every `pace` seconds, as fast as it can at 0."""
    sent = [0, 0]  # connections, bytes

    async def one(deadline: float) -> None:
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_unix_connection(proxy)
            sent[0] += 1
            try:
                writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
                await reader.readuntil(b"\r\n\r\n")
                for chunk in _trickled_hello():
                    if time.monotonic() > deadline or reader.at_eof():
                        break
                    writer.write(chunk)
                    await writer.drain()
                    sent[1] += len(chunk)
                    await asyncio.sleep(pace)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(pace)

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(deadline) for _ in range(conns)))

    asyncio.run(run())
    return {"hostile_connections": sent[0], "hostile_bytes": sent[1]}


def legit(port: int, proxy: str, seconds: float) -> dict[str, list[float]]:
    """One request at a time (CONNECT, a round trip, close) for `seconds`: its latencies."""

    async def run() -> list[float]:
        out: list[float] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            out += await _latencies(port, proxy, 1)
            await asyncio.sleep(0.01)
        return out

    return {"latencies": asyncio.run(run())}


def long_methods(proxy: str, conns: int, seconds: float) -> dict[str, float]:
    """`conns` clients sending requests with a 16 KB method, one after another."""
    request = b"M" * 16_000 + b" x.example:443 HTTP/1.1\r\n\r\n"
    sent = [0]

    async def one(deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_unix_connection(proxy)
                writer.write(request)
                await reader.read()
                writer.close()
                sent[0] += 1

    async def run() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(deadline) for _ in range(conns)))

    asyncio.run(run())
    return {"requests": sent[0]}


def audit_growth(args: argparse.Namespace) -> int:
    """How far `--hostile` clients with 16 KB methods grow the audit file in `--seconds`, and
    what reading it back then costs (time and peak memory of the end-of-session count)."""
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        proxy = _Proxy(tmp)
        try:
            out, _ = _run_client(
                proxy.role("methods", "--conns", str(args.hostile), "--seconds", str(args.seconds))
            )
        finally:
            proxy.close()
        path = Path(tmp) / "audit.jsonl"
        size = path.stat().st_size
        probe = (
            "import resource, sys, time; from pathlib import Path;"
            "from hutch.egress.session import denied_count; t = time.perf_counter();"
            "n = denied_count(Path(sys.argv[1])); t = time.perf_counter() - t;"
            "print(n, t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        env = dict(os.environ)
        if args.src is not None:
            env["PYTHONPATH"] = str(args.src.resolve())
        done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                              check=True, env=env)  # fmt: skip
        denied, seconds, rss_kib = done.stdout.split()
    requests = _floats(out["requests"])[0]
    print(f"{args.hostile} clients sending 16 KB methods for {args.seconds:.0f} s: {requests:.0f} requests")
    print(f"  audit file {size / 2**20:.1f} MiB ({size / 2**20 / args.seconds:.2f} MiB/s)")
    print(f"  end-of-session count: {denied} denied, {float(seconds) * 1e3:.0f} ms, "
          f"peak RSS {int(rss_kib) / 1024:.0f} MiB")  # fmt: skip
    if args.json is not None:
        data = {
            "requests": requests,
            "audit_bytes": size,
            "count_s": float(seconds),
            "count_rss_kib": int(rss_kib),
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


# -- driver ------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    mib: int
    runs: int
    direct_mib_s: float
    proxy_mib_s: float
    ratio: float
    conns: int
    direct_p50_ms: float
    direct_p95_ms: float
    proxy_p50_ms: float
    proxy_p95_ms: float
    added_p50_ms: float
    added_p95_ms: float
    serial_direct_p50_ms: float
    serial_proxy_p50_ms: float
    proxy_cpu_bulk_s: float
    proxy_cpu_per_conn_ms: float


@dataclass(frozen=True)
class TrickleResults:
    hostile_conns: int
    seconds: float
    alone_p50_ms: float
    alone_p99_ms: float
    trickle_p50_ms: float
    trickle_p99_ms: float
    added_p99_ms: float
    alone_requests: int
    trickle_requests: int
    proxy_cpu_alone: float  # share of one core
    proxy_cpu_trickle: float
    hostile_connections: int
    hostile_kib: float


class _Proxy:
    """The stand-in server in its own process and the proxy in this one, allowing only it."""

    def __init__(
        self, tmp: str, *, budget: bool = True, share: float | None = None, burst: float | None = None
    ) -> None:
        # Imported here so the server and client roles stay free of hutch.
        from hutch.egress.audit import AuditLog
        from hutch.egress.listener import EgressProxy
        from hutch.egress.policy import Policy, parse_allow_entry

        self.script = os.path.abspath(__file__)
        self.servers: list[subprocess.Popen[str]] = []
        self.port, self.sink_port = self._server("server"), self._server("sink")
        self.socket = str(Path(tmp) / "egress.sock")
        allow = [parse_allow_entry(f"127.0.0.1:{port}") for port in (self.port, self.sink_port)]
        policy = Policy("allowlist", allow)
        self.audit = AuditLog(Path(tmp) / "audit.jsonl", "bench")
        if budget and share is not None and burst is not None:
            self.proxy = EgressProxy(policy, Path(self.socket), self.audit, cpu_share=share, cpu_burst=burst)
        elif budget:
            self.proxy = EgressProxy(policy, Path(self.socket), self.audit)
        else:
            self.proxy = EgressProxy(policy, Path(self.socket), self.audit, cpu_share=None)
        self.proxy.start()

    def _server(self, role: str) -> int:
        cmd = [sys.executable, self.script, "--role", role]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.servers.append(server)
        assert server.stdout is not None
        return int(server.stdout.readline())

    def role(self, role: str, *extra: str, port: int | None = None) -> list[str]:
        return [sys.executable, self.script, "--role", role, "--port", str(port or self.port),
                "--proxy", self.socket, *extra]  # fmt: skip

    def close(self) -> None:
        self.proxy.stop()
        self.audit.close()
        for server in self.servers:
            server.terminate()
            server.wait(timeout=10)


def _run_client(cmd: list[str]) -> tuple[dict[str, object], float]:
    """Run a client process; its JSON output, and the CPU this process (the proxy) spent meanwhile."""
    cpu = time.process_time()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE + 60, check=False)
    spent = time.process_time() - cpu
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    out: dict[str, object] = json.loads(done.stdout)
    return out, spent


def _floats(value: object) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values if isinstance(v, int | float)]


def throughput(args: argparse.Namespace) -> int:
    raw: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        proxy = _Proxy(tmp)
        try:
            for phase in ("bulk", "latency"):
                # The proxy is the only thing this process runs meanwhile.
                out, spent = _run_client(
                    proxy.role(phase, "--mib", str(args.mib), "--conns", str(args.conns))
                )
                raw.update({key: _floats(value)[0] for key, value in out.items()})
                raw[f"proxy_cpu_{phase}_s"] = spent
        finally:
            proxy.close()

    results = Results(
        mib=args.mib,
        runs=RUNS,
        direct_mib_s=raw["direct_mib_s"],
        proxy_mib_s=raw["proxy_mib_s"],
        ratio=raw["proxy_mib_s"] / raw["direct_mib_s"],
        conns=args.conns,
        direct_p50_ms=raw["direct_p50_ms"],
        direct_p95_ms=raw["direct_p95_ms"],
        proxy_p50_ms=raw["proxy_p50_ms"],
        proxy_p95_ms=raw["proxy_p95_ms"],
        added_p50_ms=raw["proxy_p50_ms"] - raw["direct_p50_ms"],
        added_p95_ms=raw["proxy_p95_ms"] - raw["direct_p95_ms"],
        serial_direct_p50_ms=raw["serial_direct_p50_ms"],
        serial_proxy_p50_ms=raw["serial_proxy_p50_ms"],
        proxy_cpu_bulk_s=raw["proxy_cpu_bulk_s"],
        proxy_cpu_per_conn_ms=raw["proxy_cpu_latency_s"] * 1e3 / (args.conns + SERIAL_ROUNDS),
    )
    r = results
    verdict = "ok" if r.ratio >= 0.5 else "BELOW TARGET 0.5"
    print(f"bulk {r.mib} MiB (median of {r.runs}):")
    print(f"  direct  {r.direct_mib_s:9.1f} MiB/s")
    print(f"  proxy   {r.proxy_mib_s:9.1f} MiB/s")
    print(f"  ratio   {r.ratio:9.2f}   ({verdict})")
    print(f"connect latency, {r.conns} concurrent held connections:")
    print(f"  direct  p50 {r.direct_p50_ms:7.2f} ms   p95 {r.direct_p95_ms:7.2f} ms")
    print(f"  proxy   p50 {r.proxy_p50_ms:7.2f} ms   p95 {r.proxy_p95_ms:7.2f} ms")
    print(f"  added   p50 {r.added_p50_ms:7.2f} ms   p95 {r.added_p95_ms:7.2f} ms")
    print(f"one connection at a time ({SERIAL_ROUNDS} rounds), p50:")
    print(f"  direct  {r.serial_direct_p50_ms:7.2f} ms   proxy {r.serial_proxy_p50_ms:7.2f} ms")
    print(f"proxy CPU: {r.proxy_cpu_bulk_s:.2f} s for the bulk phase (warm-up + {r.runs} runs),")
    print(f"  {r.proxy_cpu_per_conn_ms:.2f} ms per connection in the latency phase")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    return 0


def trickle(args: argparse.Namespace) -> int:
    """A legitimate request's latency alone, then while `--hostile` connections trickle ClientHellos
    (`--phase flood`: without pausing, so that the proxy's CPU budget is what holds them)."""
    pace = TRICKLE_EVERY if args.phase == "trickle" else 0.0
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        proxy = _Proxy(tmp, budget=not args.no_budget, share=args.cpu_share, burst=args.cpu_burst)
        try:
            seconds = str(args.seconds)
            wall = time.monotonic()
            alone, cpu_alone = _run_client(proxy.role("legit", "--seconds", seconds))
            wall_alone = time.monotonic() - wall
            bad = subprocess.Popen(
                proxy.role("hostile", "--conns", str(args.hostile), "--seconds", str(args.seconds + 3),
                           "--pace", str(pace), port=proxy.sink_port),
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(2.0)  # the hostile connections are in full swing
            wall = time.monotonic()
            under, cpu_under = _run_client(proxy.role("legit", "--seconds", seconds))
            wall_under = time.monotonic() - wall
            hostile_out, _ = bad.communicate(timeout=DEADLINE)
            sent = {key: _floats(value)[0] for key, value in json.loads(hostile_out).items()}
        finally:
            proxy.close()
    a, u = _floats(alone["latencies"]), _floats(under["latencies"])
    r = TrickleResults(
        hostile_conns=args.hostile,
        seconds=args.seconds,
        alone_p50_ms=_pct(a, 0.50) * 1e3,
        alone_p99_ms=_pct(a, 0.99) * 1e3,
        trickle_p50_ms=_pct(u, 0.50) * 1e3,
        trickle_p99_ms=_pct(u, 0.99) * 1e3,
        added_p99_ms=(_pct(u, 0.99) - _pct(a, 0.99)) * 1e3,
        alone_requests=len(a),
        trickle_requests=len(u),
        proxy_cpu_alone=cpu_alone / wall_alone,
        proxy_cpu_trickle=cpu_under / wall_under,
        hostile_connections=int(sent["hostile_connections"]),
        hostile_kib=sent["hostile_bytes"] / 1024,
    )
    verdict = "ok" if r.added_p99_ms < 50 else "ABOVE TARGET 50 ms"
    print(f"legitimate request (CONNECT + round trip), {r.seconds:.0f} s each:")
    print(f"  alone                     p50 {r.alone_p50_ms:8.2f} ms   p99 {r.alone_p99_ms:8.2f} ms"
          f"   ({r.alone_requests} requests)   proxy CPU {r.proxy_cpu_alone:6.1%} of a core")  # fmt: skip
    print(f"  {r.hostile_conns} {args.phase:8} connections  p50 {r.trickle_p50_ms:8.2f} ms   "
          f"p99 {r.trickle_p99_ms:8.2f} ms   ({r.trickle_requests} requests)   "
          f"proxy CPU {r.proxy_cpu_trickle:6.1%} of a core")  # fmt: skip
    print(f"  added p99 {r.added_p99_ms:.2f} ms ({verdict}); the hostile side made "
          f"{r.hostile_connections} connections, sent {r.hostile_kib:.0f} KiB")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(r), indent=2) + "\n", encoding="utf-8")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["throughput", "trickle", "flood", "audit"], default="throughput")
    parser.add_argument("--no-budget", action="store_true", help="control: the proxy without its CPU budget")
    parser.add_argument("--src", type=Path, help="control: import hutch from this source tree")
    parser.add_argument("--cpu-share", type=float, help="the proxy's CPU budget: share of a core")
    parser.add_argument("--cpu-burst", type=float, help="the proxy's CPU budget: burst, CPU seconds")
    parser.add_argument("--mib", type=int, default=256, help="bulk transfer size (MiB)")
    parser.add_argument("--conns", type=int, default=200, help="concurrent held connections")
    parser.add_argument("--hostile", type=int, default=6, help="trickling connections (trickle phase)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement (trickle phase)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--role",
        choices=["server", "sink", "bulk", "latency", "hostile", "legit", "methods"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
    if args.role == "server":
        serve()
        return 0
    if args.role == "sink":
        sink()
        return 0
    if args.role in ("bulk", "latency"):
        print(json.dumps(client(args.role, args.port, args.proxy, args.mib * CHUNK, args.conns)))
        return 0
    if args.role == "hostile":
        print(json.dumps(hostile(args.port, args.proxy, args.conns, args.seconds, args.pace)))
        return 0
    if args.role == "methods":
        print(json.dumps(long_methods(args.proxy, args.conns, args.seconds)))
        return 0
    if args.role == "legit":
        print(json.dumps(legit(args.port, args.proxy, args.seconds)))
        return 0
    if args.phase == "audit":
        return audit_growth(args)
    return throughput(args) if args.phase == "throughput" else trickle(args)


if __name__ == "__main__":
    sys.exit(main())
