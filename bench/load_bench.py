"""Downloads under load: N sandboxes x M parallel HTTPS downloads, allowlist proxy vs --network open.

    python bench/load_bench.py [--sessions 8] [--parallel 50] [--kib 3400] [--modes allowlist,open]
                               [--rounds 1] [--json PATH]

A TLS server on this machine (its own process, on all addresses, self-signed,
dropping a connection whose handshake takes over 10 s, as the npm registry
does) serves one file. In allowlist mode the sandboxes reach it as
`localhost:PORT` through hutch's proxy (allowed by `allow_private` in the user
config, so the name is resolved and SNI-checked like any other); in open mode
at the host's address on the engine's bridge. Each session starts, says it is
ready, and waits for a flag file in the project; then all start their
downloads at once. Success means status 200 and every byte; throughput is all
bytes received over the time from the flag to the last download's end. hutch
runs with HOME and XDG directories in a temp dir; `$HUTCH` names the binary
(default: the `hutch` beside this interpreter).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HANDSHAKE_LIMIT = 10.0
SESSION_TIMEOUT = 600.0


# -- server role ---------------------------------------------------------------


def serve(directory: Path, size: int) -> None:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    body = os.urandom(size)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 4096

        def finish_request(
            self, request: socket.socket | tuple[bytes, socket.socket], client: object
        ) -> None:
            # The handshake in the request's own thread, bounded like a registry's.
            assert isinstance(request, socket.socket)
            request.settimeout(HANDSHAKE_LIMIT)
            try:
                tls = context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            tls.settimeout(120)
            Handler(tls, client, self)

    with Server(("0.0.0.0", 0), Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


# -- the in-sandbox relay's own cost -----------------------------------------------

# Runs inside a sandbox: connections through the loopback relay against the same
# connections straight to the proxy's Unix socket (the control), and the CPU of
# the relay's processes (socat counts its children once they are reaped).
RELAY_PROBE = """
import os, socket, sys, time
target, rounds, bulk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proxy = os.environ["HUTCH_PROXY_SOCKET"]
def relay_cpu():
    total = 0
    for pid in os.listdir("/proc"):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            if pid.isdigit() and int(pid) != os.getpid() and (b"socat" in cmd or b"send_fds" in cmd):
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")
def connect(via):
    if via == "relay":
        sock = socket.create_connection(("127.0.0.1", 3128))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(proxy)
    sock.sendall(f"CONNECT {target} HTTP/1.1\\r\\n\\r\\n".encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += sock.recv(4096)
    return sock
out = {}
for via in ("direct", "relay") * 2:
    cpu, start = relay_cpu(), time.perf_counter()
    for _ in range(rounds):
        sock = connect(via)
        sock.sendall(b"PING\\n")
        sock.recv(16)
        sock.close()
    per_conn = (time.perf_counter() - start) / rounds
    time.sleep(0.6)
    cpu_conn = (relay_cpu() - cpu) / rounds
    cpu, start = relay_cpu(), time.perf_counter()
    sock = connect(via)
    sock.sendall(f"BULK {bulk}\\n".encode())
    got, buf = 0, bytearray(1 << 18)
    while got < bulk:
        n = sock.recv_into(buf)
        if not n:
            break
        got += n
    sock.close()
    rate = got / (time.perf_counter() - start) / 2**20
    time.sleep(0.6)
    for key, value in ((f"{via}_conn_ms", per_conn * 1e3), (f"{via}_relay_cpu_ms", cpu_conn * 1e3),
                       (f"{via}_bulk_mib_s", rate), (f"{via}_bulk_relay_cpu_s", relay_cpu() - cpu)):
        out.setdefault(key, []).append(value)
print(repr({key: min(values) if "cpu" not in key else max(values) for key, values in out.items()}))
"""


def relay_cost(args: argparse.Namespace, env: dict[str, str], root: Path) -> int:
    """The relay's cost per connection and per byte, inside a real sandbox."""
    bench = Path(__file__).with_name("proxy_bench.py")
    server = subprocess.Popen(
        [sys.executable, str(bench), "--role", "server"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        hutch = os.environ.get("HUTCH", str(Path(sys.executable).parent / "hutch"))
        project = Path(tempfile.mkdtemp(prefix="relay-", dir=root))
        target = f"127.0.0.1:{port}"
        done = subprocess.run(
            [hutch, "-q", "exec", "--allow", target, "--", "python3", "-c", RELAY_PROBE, target, "300",
             str(256 << 20)],
            cwd=project, env=env, capture_output=True, text=True, timeout=SESSION_TIMEOUT, check=False,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    import ast

    r = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    print("one connection at a time (CONNECT, a round trip, close), fastest of two runs of 300:")
    print(f"  straight to the proxy's socket  {r['direct_conn_ms']:6.2f} ms")
    print(f"  through the loopback relay      {r['relay_conn_ms']:6.2f} ms   "
          f"relay CPU {r['relay_relay_cpu_ms']:.2f} ms per connection")  # fmt: skip
    print("one 256 MiB download:")
    print(f"  straight to the proxy's socket  {r['direct_bulk_mib_s']:7.1f} MiB/s")
    print(f"  through the loopback relay      {r['relay_bulk_mib_s']:7.1f} MiB/s   "
          f"relay CPU {r['relay_bulk_relay_cpu_s']:.2f} s")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    return 0


# -- driver --------------------------------------------------------------------


SCRIPT = """
touch ready-$S
while [ ! -e go ]; do sleep 0.02; done
# curl writes its line (status 000 when it failed) and nothing else.
for i in $(seq $N); do
    NO_PROXY= no_proxy= curl -sk --max-time 300 -o /dev/null \\
        -w '%{http_code} %{size_download} %{time_appconnect} %{time_total}\\n' "$URL" &
done > out-$S 2>/dev/null
wait
date +%s.%N > end-$S
"""


@dataclass(frozen=True)
class Run:
    mode: str
    sessions: int
    parallel: int
    size: int
    ok: int
    failed: int
    seconds: float
    mib_s: float
    handshake_p50_s: float
    handshake_p99_s: float
    hutch_cpu_s: float  # hutch processes (proxies included) and their engine clients
    session_status: list[int]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bridge_address() -> str:
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    config = json.loads(out.stdout)[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    import ipaddress

    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def one_round(mode: str, args: argparse.Namespace, port: int, root: Path, env: dict[str, str]) -> Run:
    project = Path(tempfile.mkdtemp(prefix=f"load-{mode}-", dir=root))
    host = "localhost" if mode == "allowlist" else bridge_address()
    url = f"https://{host}:{port}/file"
    hutch = os.environ.get("HUTCH", str(Path(sys.executable).parent / "hutch"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for s in range(args.sessions):
        script_env = f"S={s} N={args.parallel} URL={url}"
        argv = [hutch, "-q", "exec", "--network", mode, "--", "sh", "-c", f"{script_env}; {SCRIPT}"]
        procs.append(subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    deadline = time.monotonic() + SESSION_TIMEOUT
    while not all((project / f"ready-{s}").exists() for s in range(args.sessions)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            errors = [p.communicate()[1] for p in procs]
            raise RuntimeError(f"sessions did not all start: {errors}")
        time.sleep(0.05)
    go = time.time()
    (project / "go").touch()
    status = [p.wait(timeout=SESSION_TIMEOUT) for p in procs]
    for p in procs:
        _, err = p.communicate()
        if err.strip():
            print(err.strip()[-2000:], file=sys.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ok = failed = received = 0
    handshakes: list[float] = []
    end = go
    for s in range(args.sessions):
        out = project / f"out-{s}"
        lines = out.read_text().splitlines() if out.exists() else []
        for line in lines:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "200" and int(float(parts[1])) == args.size:
                ok += 1
                received += args.size
                handshakes.append(float(parts[2]))
            else:
                failed += 1
        failed += max(0, args.parallel - len(lines))
        end_file = project / f"end-{s}"
        if end_file.exists():
            end = max(end, float(end_file.read_text()))
    seconds = end - go
    return Run(
        mode=mode,
        sessions=args.sessions,
        parallel=args.parallel,
        size=args.size,
        ok=ok,
        failed=failed,
        seconds=seconds,
        mib_s=received / seconds / 2**20 if seconds > 0 else 0.0,
        handshake_p50_s=_pct(handshakes, 0.5),
        handshake_p99_s=_pct(handshakes, 0.99),
        hutch_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        session_status=status,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=50)
    parser.add_argument("--kib", type=int, default=3400, help="file size")
    parser.add_argument("--modes", default="allowlist,open")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, modes alternating within each")
    parser.add_argument("--relay", action="store_true", help="measure the in-sandbox relay's own cost")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--role", choices=["server"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.kib * 1024
    if args.role == "server":
        serve(args.dir, args.size)
        return 0

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="hutch-load-") as tmp:
        root = Path(tmp)
        server = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--role", "server", "--dir", tmp,
             "--kib", str(args.kib)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(root / "home"),
                "XDG_CONFIG_HOME": str(root / "config"),
                "XDG_DATA_HOME": str(root / "data"),
                "XDG_STATE_HOME": str(root / "state"),
            }
            for key in ("HUTCH_ENGINE", "DOCKER_HOST"):
                if key in os.environ:
                    env[key] = os.environ[key]
            if args.relay:
                return relay_cost(args, env, root)
            config = root / "config" / "hutch" / "config.toml"
            config.parent.mkdir(parents=True)
            config.write_text(f'[network]\nallow_private = ["localhost:{port}"]\n')
            modes = args.modes.split(",")
            for r in range(args.rounds):
                for mode in modes if r % 2 == 0 else reversed(modes):
                    run = one_round(mode, args, port, root, env)
                    runs.append(run)
                    print(f"{run.mode:9}  {run.ok}/{run.ok + run.failed} ok  {run.seconds:6.1f} s  "
                          f"{run.mib_s:7.1f} MiB/s  TLS handshake p50 {run.handshake_p50_s:.2f} s "
                          f"p99 {run.handshake_p99_s:.2f} s  hutch CPU {run.hutch_cpu_s:.1f} s  "
                          f"exit {sorted(set(run.session_status))}", flush=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=10)
    by_mode: dict[str, list[Run]] = {}
    for run in runs:
        by_mode.setdefault(run.mode, []).append(run)
    if {"allowlist", "open"} <= set(by_mode):
        allow, open_ = by_mode["allowlist"], by_mode["open"]
        rate = sum(r.ok for r in allow) / sum(r.ok + r.failed for r in allow)
        ratio = sum(r.mib_s for r in allow) / sum(r.mib_s for r in open_)
        target = "ok" if rate >= 0.99 and ratio >= 0.8 else "BELOW TARGET (>= 99%, >= 0.8x)"
        print(f"allowlist: {rate:.1%} succeeded, {ratio:.2f}x the open mode's throughput ({target})")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
