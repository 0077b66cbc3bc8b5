"""The egress firewall on a real engine. Every denial has a control that succeeds.

The stand-in "outside" is an HTTP server in this test process: on loopback it
is reachable by hutch's proxy (allowed as an IP literal, or by name through
allow_private); on all addresses it is what a leaking sandbox would reach via
the host's address as seen from inside, which the open-mode controls show.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import Engine, Hutch

pytestmark = [pytest.mark.integration, pytest.mark.engines]

BODY = "hello from the stand-in outside"
# Loopback is in NO_PROXY inside (for the sandbox's own services); these probes
# aim at the host's loopback, which only the proxy can reach.
VIA_PROXY = "NO_PROXY= no_proxy= curl -x http://127.0.0.1:3128"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = BODY.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def outside() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for name, and its key."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", f"/CN={name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS server on loopback with a self-signed certificate for "localhost"."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"), "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1024)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(timeout=5)
    listener.close()


def host_seen_from_inside(engine: Engine) -> str:
    """An address of the host that open mode reaches from inside."""
    if engine.rootless:
        # slirp4netns: no bridge, and hutch keeps the host's loopback (10.0.2.2)
        # out of reach; its connections leave from the host's own network
        # stack, so the host's outward address is the one a leak would use.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("203.0.113.1", 9))  # TEST-NET-3; no packet is sent, only a route chosen
            return str(probe.getsockname()[0])
    if engine.podman:
        out = engine.cli("network", "inspect", "podman", "--format", "{{json .Subnets}}")
        return str(json.loads(out.stdout)[0]["gateway"])
    # Docker: the host's address on the default bridge.
    out = engine.cli("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}")
    config = json.loads(out.stdout)[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    # Older daemons leave Gateway out: it is the subnet's first address.
    import ipaddress

    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def sh(hutch: Hutch, project: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return hutch.run("-q", "exec", *flags, "--", "sh", "-c", script, cwd=project, timeout=180)


def events(hutch: Hutch) -> list[dict[str, object]]:
    found = []
    for path in (hutch.state / "hutch" / "audit").glob("*.egress.jsonl"):
        found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


def test_allowed_ip_literal_reaches_outside_and_is_logged(
    hutch: Hutch, project: Path, outside: int
) -> None:
    result = sh(hutch, project, f"{VIA_PROXY} -sS -m 10 http://127.0.0.1:{outside}/",
                "--allow", f"127.0.0.1:{outside}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == BODY
    logged = [e for e in events(hutch) if e["port"] == outside]
    assert logged and logged[0]["decision"] == "allow" and int(logged[0]["bytes_down"]) > 0


def test_host_off_the_list_is_denied_with_the_fix(hutch: Hutch, project: Path, outside: int) -> None:
    result = sh(hutch, project, f"{VIA_PROXY} -sS -m 10 -w '%{{http_code}}' http://127.0.0.1:{outside}/")
    assert result.stdout.endswith("403"), result.stdout
    assert BODY not in result.stdout
    assert "--allow" in result.stdout
    assert "denied" in hutch.run("audit", cwd=project).stdout


def test_program_ignoring_proxy_variables_gets_nowhere(
    engine: Engine, hutch: Hutch, project: Path, outside: int
) -> None:
    target = f"http://{host_seen_from_inside(engine)}:{outside}/"
    probe = f"curl -sS -m 5 --noproxy '*' {target}"
    control = sh(hutch, project, probe, "--network", "open")
    assert control.returncode == 0 and control.stdout == BODY, control.stderr
    blocked = sh(hutch, project, probe)
    assert blocked.returncode != 0
    assert BODY not in blocked.stdout


def test_network_none_has_no_route(hutch: Hutch, project: Path) -> None:
    probe = "ls /sys/class/net | tr '\\n' ' '; echo; grep -c . /proc/net/route"
    closed = sh(hutch, project, probe, "--network", "none")
    assert closed.returncode == 0, closed.stderr
    interfaces, routes = closed.stdout.splitlines()
    assert interfaces.split() == ["lo"]
    assert routes == "1"  # the header line only
    # Control: the open mode does get an interface and a route out.
    control = sh(hutch, project, probe, "--network", "open")
    assert control.returncode == 0, control.stderr
    assert set(control.stdout.splitlines()[0].split()) - {"lo"}
    assert int(control.stdout.splitlines()[1]) > 1


def test_no_dns_and_no_route_in_allowlist_mode(hutch: Hutch, project: Path) -> None:
    probe = "getent hosts deb.debian.org >/dev/null && echo resolved; grep -c . /proc/net/route"
    control = sh(hutch, project, probe, "--network", "open")
    assert "resolved" in control.stdout, control.stderr
    closed = sh(hutch, project, probe)
    assert "resolved" not in closed.stdout
    # Only the header line: no IPv4 route at all.
    assert closed.stdout.strip().splitlines()[-1] == "1"
    ipv6 = sh(hutch, project, "cat /proc/net/if_inet6 2>/dev/null | awk '{print $6}'")
    assert set(ipv6.stdout.split()) <= {"lo"}


def test_name_resolving_to_loopback_needs_allow_private(
    hutch: Hutch, project: Path, outside: int
) -> None:
    probe = f"{VIA_PROXY} -sS -m 10 -w ' %{{http_code}}' http://localhost:{outside}/"
    denied = sh(hutch, project, probe, "--allow", f"localhost:{outside}")
    assert denied.stdout.endswith("403") and "loopback" in denied.stdout, denied.stdout
    (project / "hutch.toml").write_text(f'[network]\nallow_private = ["localhost:{outside}"]\n')
    hutch.own(project / "hutch.toml")
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    allowed = sh(hutch, project, probe)
    assert allowed.stdout == f"{BODY} 200", allowed.stdout + allowed.stderr


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
def test_ip_literal_spellings_are_denied(
    hutch: Hutch, project: Path, outside: int, spelling: str
) -> None:
    probe = f"{VIA_PROXY} -sS -m 10 -w ' %{{http_code}}' http://{spelling}:{outside}/"
    result = sh(hutch, project, probe)
    assert result.stdout.endswith("403"), result.stdout
    assert BODY not in result.stdout


def test_sni_must_match_the_connect_host(hutch: Hutch, project: Path, tls_outside: int) -> None:
    (project / "hutch.toml").write_text(f'[network]\nallow_private = ["localhost:{tls_outside}"]\n')
    hutch.own(project / "hutch.toml")
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    url = f"https://localhost:{tls_outside}/"
    control = sh(hutch, project, f"{VIA_PROXY} -sS -k -m 10 {url}")
    assert control.stdout == "ok", control.stderr
    # curl's --connect-to keeps the SNI of the URL's name while CONNECT goes elsewhere.
    spoof = sh(
        hutch, project,
        f"{VIA_PROXY} -sS -k -m 10 --connect-to evil.example:{tls_outside}:localhost:{tls_outside} "
        f"https://evil.example:{tls_outside}/",
    )  # fmt: skip
    assert spoof.stdout != "ok"
    assert spoof.returncode != 0


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else ""
    return fields


@pytest.mark.engines("docker", "podman")  # hutch as root: not rootless Podman's case
def test_proxy_runs_unprivileged_when_hutch_is_root(hutch: Hutch, project: Path) -> None:
    import os
    import time

    assert os.geteuid() == 0, "this test proves the root case; CI runs as root"
    proc = hutch.popen("-q", "exec", "--", "sleep", "60", cwd=project)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not children:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        status = _status(int(entry.name))
                    except OSError:
                        continue
                    if status.get("PPid") == str(proc.pid) and status.get("Name") != hutch.engine.client:
                        children.append(int(entry.name))
            time.sleep(0.2)
        assert children, "no proxy child process found"
        proxy = _status(children[0])
        # Control: hutch itself is root with root's capabilities.
        parent = _status(proc.pid)
        assert parent["Uid"] == "0" and int(parent["CapEff"], 16) != 0
        assert proxy["Uid"] == "65534" and proxy["Gid"] == "65534"
        assert int(proxy["CapEff"], 16) == 0 and int(proxy["CapPrm"], 16) == 0
    finally:
        proc.send_signal(15)
        proc.wait(timeout=60)


# -- the default allowlist: the agent's API host, npm and PyPI -----------------------

CONNECT_AND_STATUS = "-o /dev/null -w '%{http_connect} %{http_code}'"


@pytest.mark.engines("docker")
def test_default_allowlist_reaches_npm_and_pypi(hutch: Hutch, project: Path) -> None:
    # The registries answer from this machine; every other host is denied at CONNECT.
    urls = {
        "npm": "https://registry.npmjs.org/-/ping",
        "pypi": "https://pypi.org/simple/pip/",
        "pypi-files": "https://files.pythonhosted.org/",
        "control": "https://example.com/",
    }
    script = "; ".join(f"echo {key} $(curl -sS -m 30 {CONNECT_AND_STATUS} {u})" for key, u in urls.items())
    result = sh(hutch, project, script)
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert seen["npm"] == "200 200", result.stdout + result.stderr
    assert seen["pypi"] == "200 200", result.stdout + result.stderr
    # The files host answers its root with whatever it likes; it answered through the tunnel.
    connect, status = seen["pypi-files"].split()
    assert connect == "200" and status != "000", result.stdout + result.stderr
    assert seen["control"] == "403 000", result.stdout


STAND_IN = """
import http.server, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"stand-in for the agent's API"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.HTTPServer(("203.0.113.7", 443), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.mark.engines("docker")
def test_default_allowlist_reaches_the_agents_api_host(
    engine: Engine, hutch: Hutch, project: Path, tmp_path: Path
) -> None:
    """The agent's API host is on the allowlist with no config at all. It does not answer
    from here, so hutch runs in a network and mount namespace of the test's own where
    api.anthropic.com (and, for the control, a host that is not listed) name a stand-in
    at 203.0.113.7:443, a documentation address the proxy does not treat as private."""
    assert os.geteuid() == 0, "namespaces need root; CI runs as root"
    cert, key = self_signed(tmp_path, "api.anthropic.com")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n203.0.113.7 api.anthropic.com not-listed.example\n")
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    probe = "; ".join(
        f"echo {name} $(curl -sSk -m 30 {CONNECT_AND_STATUS} https://{name}/)"
        for name in ("api.anthropic.com", "not-listed.example")
    )
    argv, env = hutch.command(["-q", "exec", "--", "sh", "-c", probe], None)
    wrapper = (
        "set -e; ip link set lo up; ip addr add 203.0.113.7/32 dev lo; "
        f"mount --bind {hosts} /etc/hosts; "
        f"python3 {tmp_path / 'stand_in.py'} {cert} {key} > {tmp_path / 'ready'} 2>&1 & server=$!; "
        f"while ! grep -q ready {tmp_path / 'ready'} 2>/dev/null; do sleep 0.1; done; "
        f'set +e; {" ".join(shlex.quote(a) for a in argv)}; status=$?; kill $server; exit $status'
    )
    result = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", wrapper], cwd=project, env=env,
                            capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert seen.get("api.anthropic.com") == "200 200", result.stdout + result.stderr
    # Control: the same address under a name the allowlist does not hold.
    assert seen.get("not-listed.example") == "403 000", result.stdout + result.stderr
    logged = {(e["host"], e["decision"], e["rule"]) for e in events(hutch)}
    assert ("api.anthropic.com", "allow", "api.anthropic.com") in logged
    assert ("not-listed.example", "deny", None) in logged
