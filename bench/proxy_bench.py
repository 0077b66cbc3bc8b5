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
import json
import os
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="bulk transfer size (MiB)")
    parser.add_argument("--conns", type=int, default=200, help="concurrent held connections")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--role", choices=["server", "bulk", "latency"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve()
        return 0
    if args.role in ("bulk", "latency"):
        out = client(args.role, args.port, args.proxy, args.mib * CHUNK, args.conns)
        print(json.dumps(out))
        return 0

    # Imported here so the server and client roles stay free of hutch.
    from hutch.egress.audit import AuditLog
    from hutch.egress.listener import EgressProxy
    from hutch.egress.policy import Policy, parse_allow_entry

    script = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, script, "--role", "server"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
            sock_path = Path(tmp) / "egress.sock"
            policy = Policy("allowlist", [parse_allow_entry(f"127.0.0.1:{port}")])
            with AuditLog(Path(tmp) / "audit.jsonl", "bench") as audit:
                with EgressProxy(policy, sock_path, audit):
                    raw: dict[str, float] = {}
                    for phase in ("bulk", "latency"):
                        cmd = [sys.executable, script, "--role", phase, "--port", str(port)]
                        cmd += ["--proxy", str(sock_path), "--mib", str(args.mib)]
                        cmd += ["--conns", str(args.conns)]
                        # The proxy is the only thing this process runs meanwhile.
                        cpu = time.process_time()
                        done = subprocess.run(
                            cmd, capture_output=True, text=True, timeout=DEADLINE + 60, check=False
                        )
                        raw[f"proxy_cpu_{phase}_s"] = time.process_time() - cpu
                        if done.returncode != 0:
                            print(done.stderr, file=sys.stderr)
                            return 1
                        raw.update(json.loads(done.stdout))
    finally:
        server.terminate()
        server.wait(timeout=10)

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


if __name__ == "__main__":
    sys.exit(main())
