"""The sandbox's key guarantees on Podman: rootful (hutch as root) and rootless
(hutch as an unprivileged user with subordinate ID ranges, `--userns=keep-id`).

Each mode imports the offline base image into its own storage and builds the
agent image once; every test then runs with a fresh HOME and XDG dirs that find
that image by its tag. Rootless Podman's storage stays put while the XDG dirs
change (CONTAINERS_STORAGE_CONF names it), as it would for a real user whose
HOME does not move. Containers are cleaned up by label.
"""

from __future__ import annotations

import http.server
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import _install_hutch
from .support import BUILD_TIMEOUT, HUTCH, REPO_ROOT, Hutch, wait_for

pytestmark = pytest.mark.integration

POD_USER = "hutch-pod"
POD_UID = 2345
POD_HOME = Path("/home/hutch-pod")
SUBID_COUNT = 65536
RUNTIME_DIR = f"/run/user/{POD_UID}"
# Debian's Podman 4.3 would fall back to vfs: a full image copy per launch.
STORAGE_CONF = f"""[storage]
driver = "overlay"
graphroot = "{POD_HOME}/.local/share/containers/storage"
runroot = "{RUNTIME_DIR}/containers"
"""
CANARY, VALUE = "HUTCH_CANARY_SECRET", "s3cr3t"
HOST_PROXY = "http://user:proxy-password@proxy.invalid:3128"
BODY = "hello from the stand-in outside"
# Loopback is in NO_PROXY inside; these probes aim at the host's loopback,
# which only hutch's proxy can reach.
VIA_PROXY = "NO_PROXY= no_proxy= curl -x http://127.0.0.1:3128"
# What hutch sets, and what Podman adds of its own (no host values among them).
HUTCH_FIXED = {"HOME", "USER", "LOGNAME", "SHELL", "HUTCH_SESSION", "IS_SANDBOX", "DISABLE_AUTOUPDATER"}
PODMAN_OWN = {"container", "TERM", "HOSTNAME"}


@dataclass
class Mode:
    """How one Podman flavour is driven: as which user, with which environment."""

    name: str  # "rootful" | "rootless"
    uid: int
    gid: int
    user: str | None = None  # run hutch and podman as this user (runuser)
    hutch_binary: str = str(HUTCH)
    env: dict[str, str] = field(default_factory=dict)  # for hutch and podman alike
    tag: str = ""
    pins: Path = Path()

    def podman(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = ["podman", *args]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        if self.user is not None:
            env["HOME"] = str(POD_HOME)
            assignments = [f"{k}={v}" for k, v in env.items()]
            argv = ["runuser", "-u", self.user, "--", "env", "-i", *assignments, *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd="/")  # fmt: skip

    def hutch(self, root: Path) -> Hutch:
        h = Hutch(root, binary=self.hutch_binary, user=self.user,
                  extra_env={"HUTCH_ENGINE": "podman", **self.env})  # fmt: skip
        h.make_dirs()
        if self.user is not None:
            # The user's storage, where their XDG_CONFIG_HOME says (a moved
            # XDG_DATA_HOME would otherwise move it, and Podman 4.3 ignores
            # graphroot under CONTAINERS_STORAGE_CONF then).
            conf = h.config / "containers" / "storage.conf"
            conf.parent.mkdir(parents=True)
            conf.write_text(STORAGE_CONF)
        if self.pins.is_file():
            target = h.state / "hutch" / "versions.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.pins, target)
        if self.user is not None:
            chown_tree(root, self.uid, self.gid)
        return h

    def containers_under(self, root: Path) -> list[dict[str, object]]:
        ids = self.podman("ps", "-aq", "--no-trunc", "--filter", "label=io.hutch.managed=true")
        wanted = ids.stdout.split()
        if not wanted:
            return []
        items = json.loads(self.podman("inspect", *wanted).stdout or "[]")
        prefix = str(root).rstrip("/") + "/"
        return [
            item for item in items
            if (item.get("Config", {}).get("Labels") or {}).get("io.hutch.project", "").startswith(prefix)
        ]  # fmt: skip

    def project_containers(self, project: Path) -> list[dict[str, object]]:
        return [
            item for item in self.containers_under(project.parent)
            if item["Config"]["Labels"]["io.hutch.project"] == str(project)  # type: ignore[index]
        ]  # fmt: skip


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """For trees the test just made; never follows a link (it may point anywhere)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid, follow_symlinks=False)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


# -- setting up the two flavours ---------------------------------------------------


def _subid_entry(path: Path, name: str) -> bool:
    return any(line.split(":")[0] == name for line in path.read_text().splitlines())


def _next_free_subid(path: Path) -> int:
    ends = [int(f[1]) + int(f[2]) for f in (line.split(":") for line in path.read_text().splitlines())
            if len(f) == 3 and f[1].isdigit() and f[2].isdigit()]  # fmt: skip
    return max([100000, *ends])


def _ensure_rootless_user() -> None:
    """hutch-pod (2345:2345) with a home, subordinate ID ranges and the overlay driver."""
    try:
        entry = pwd.getpwnam(POD_USER)
    except KeyError:
        subprocess.run(["groupadd", "-g", str(POD_UID), POD_USER], check=False)
        subprocess.run(["useradd", "-u", str(POD_UID), "-g", str(POD_UID), "-m", "-d", str(POD_HOME),
                        "-s", "/bin/sh", POD_USER], check=True)  # fmt: skip
        entry = pwd.getpwnam(POD_USER)
    assert (entry.pw_uid, entry.pw_gid) == (POD_UID, POD_UID), entry
    for kind, path in (("uids", Path("/etc/subuid")), ("gids", Path("/etc/subgid"))):
        path.touch(exist_ok=True)
        if not _subid_entry(path, POD_USER):
            start = _next_free_subid(path)
            subprocess.run(["usermod", f"--add-sub{kind}", f"{start}-{start + SUBID_COUNT - 1}",
                            POD_USER], check=True)  # fmt: skip
    runtime = Path(RUNTIME_DIR)
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, POD_UID, POD_UID)
    runtime.chmod(0o700)
    conf = POD_HOME / ".config" / "containers" / "storage.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(STORAGE_CONF)
    # Only what was made here: the home also holds the user's image storage.
    for path in (conf.parent.parent, conf.parent, conf):
        os.chown(path, POD_UID, POD_UID, follow_symlinks=False)
    tun = Path("/dev/net/tun")
    assert tun.exists() and os.stat(tun).st_mode & 0o006 == 0o006, (
        "rootless Podman's network (slirp4netns) needs /dev/net/tun usable by all "
        "(crw-rw-rw-, as Debian makes it); .ci/run sets it up"
    )


def _import_base(mode: Mode) -> None:
    """The offline base image, into this flavour's own storage."""
    plain = {"HUTCH_CI_ENGINE": "podman", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    env = {**plain, **mode.env, "HOME": str(POD_HOME)}
    argv = ["bash", str(REPO_ROOT / ".ci" / "base-image.sh"), "debian:bookworm-slim"]
    if mode.user is not None:
        # As root first (into rootful storage): only root can debootstrap the
        # shared tarball when it is missing; the user then reads it.
        first = subprocess.run(argv, env=plain, capture_output=True, text=True,
                               timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        argv = ["runuser", "-u", mode.user, "--", "env", "-i",
                *[f"{k}={v}" for k, v in env.items()], *argv]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                            check=False, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def podman_root() -> Iterator[Path]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/run installs it)")
    if os.getuid() != 0:
        pytest.skip("the Podman tests create a user and run rootful Podman: run them as root")
    root = Path(tempfile.mkdtemp(prefix="hutch-pod-it-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", params=["rootful", "rootless"])
def mode(request: pytest.FixtureRequest, podman_root: Path) -> Iterator[Mode]:
    """One flavour, set up and with the agent image built (once per test session)."""
    if request.param == "rootful":
        m = Mode("rootful", 0, 0)
    else:
        _ensure_rootless_user()
        venv = _install_hutch()  # shared with conftest's non-root user; readable by all
        m = Mode("rootless", POD_UID, POD_UID, user=POD_USER,
                 hutch_binary=str(venv / "bin" / "hutch"),
                 env={"XDG_RUNTIME_DIR": RUNTIME_DIR})  # fmt: skip
    _import_base(m)
    info = m.podman("info", "--format", "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}")
    assert info.stdout.split() == [str(m.user is not None).lower(), "overlay"], info.stderr
    root = podman_root / m.name
    root.mkdir()
    root.chmod(0o755)
    shared = m.hutch(root / "shared")
    project = shared.root / "proj"
    project.mkdir()
    if m.user is not None:
        os.chown(project, m.uid, m.gid)
    result = shared.run("build", cwd=project, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    m.tag = result.stdout.strip().splitlines()[-1]
    m.pins = shared.state / "hutch" / "versions.json"
    assert m.tag.startswith("hutch-claude:") and m.pins.is_file(), result.stdout
    try:
        yield m
    finally:
        leftovers = [str(c["Id"]) for c in m.containers_under(root)]
        if leftovers:
            m.podman("rm", "-f", *leftovers)


@pytest.fixture
def hutch(mode: Mode, podman_root: Path, request: pytest.FixtureRequest) -> Hutch:
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=podman_root / mode.name))
    root.chmod(0o755)
    return mode.hutch(root)


@pytest.fixture
def project(hutch: Hutch, mode: Mode) -> Path:
    path = hutch.root / "proj"
    path.mkdir()
    os.chown(path, mode.uid, mode.gid)
    return path


def sh(hutch: Hutch, project: Path, script: str, *flags: str,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return hutch.run("-q", "exec", *flags, "--", "sh", "-c", script, cwd=project, env=env,
                     timeout=180)  # fmt: skip


# -- the guarantees ------------------------------------------------------------------

PROBE = r"""
echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr : =
touch newfile && mkdir newdir && touch newdir/inner && touch "$HOME/home-file"
if echo tamper >> other.txt 2>/dev/null; then echo other=WRITTEN; else echo other=denied; fi
"""


def test_identity_ownership_and_privileges(mode: Mode, hutch: Hutch, project: Path) -> None:
    other = project / "other.txt"  # another user's file that must stay untouched
    other.write_text("other\n")
    os.chown(other, 4242, 4242)
    other.chmod(0o644)
    result = sh(hutch, project, PROBE)
    assert result.returncode == 0, result.stderr
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert facts["uid"] == str(mode.uid)
    assert facts["gid"] == str(mode.gid)
    assert facts["groups"] == str(mode.gid)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(facts[cap], 16) == 0, f"{cap}={facts[cap]}"
    assert facts["NoNewPrivs"] == "1"
    # Even root inside (rootful) lacks CAP_DAC_OVERRIDE.
    assert facts["other"] == "denied"
    for created in ("newfile", "newdir", "newdir/inner"):
        st = (project / created).lstat()
        assert (st.st_uid, st.st_gid) == (mode.uid, mode.gid), created
    st = other.lstat()
    assert (st.st_uid, st.st_gid, other.read_text()) == (4242, 4242, "other\n")
    home_file = hutch.data / "hutch" / "homes" / "claude" / "home-file"
    assert (home_file.stat().st_uid, home_file.stat().st_gid) == (mode.uid, mode.gid)


@pytest.mark.parametrize("status", [0, 42])
def test_exit_status_passes_through(hutch: Hutch, project: Path, status: int) -> None:
    result = sh(hutch, project, f"exit {status}")
    assert result.returncode == status, result.stderr


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


def test_host_variables_stay_out_unless_named(mode: Mode, hutch: Hutch, project: Path) -> None:
    # Podman would copy a host proxy variable in by itself (--http-proxy).
    env = hutch.env(**{CANARY: VALUE, "HTTP_PROXY": HOST_PROXY, "https_proxy": HOST_PROXY})
    result = sh(hutch, project, "env", "--network", "none", env=env)
    assert result.returncode == 0, result.stderr
    assert VALUE not in result.stdout and "proxy-password" not in result.stdout
    named = sh(hutch, project, "env", "--network", "none", "--env", CANARY, env=env)
    assert f"{CANARY}={VALUE}" in named.stdout.splitlines()
    assert "proxy-password" not in named.stdout
    dry = hutch.run("exec", "--dry-run", "--env", CANARY, "--", "true", cwd=project, env=env)
    assert f"{CANARY}=<redacted>" in dry.stdout and VALUE not in dry.stdout + dry.stderr

    # Engine metadata: only the image's, hutch's and Podman's own variables.
    proc = hutch.popen("-q", "exec", "--network", "none", "--", "sleep", "120", cwd=project, env=env)
    try:
        found = wait_for(lambda: mode.project_containers(project), 60, "the session container")
        assert isinstance(found, list) and len(found) == 1
        names = {e.split("=", 1)[0] for e in found[0]["Config"]["Env"]}
    finally:
        proc.terminate()
    image_env = mode.podman("image", "inspect", "--format", "{{json .Config.Env}}", mode.tag).stdout
    image_names = {e.split("=", 1)[0] for e in json.loads(image_env)}
    assert names - image_names - HUTCH_FIXED <= PODMAN_OWN, names
    assert VALUE not in json.dumps(found)
    assert "proxy-password" not in json.dumps(found)


def test_container_gone_after_the_session(mode: Mode, hutch: Hutch, project: Path) -> None:
    result = sh(hutch, project, "true")
    assert result.returncode == 0, result.stderr
    assert mode.project_containers(project) == []
    # Also when the session is ended by a signal (as a terminal's Ctrl-C would).
    proc = hutch.popen("-q", "exec", "--", "sleep", "300", cwd=project)
    try:
        wait_for(lambda: mode.project_containers(project), 60, "the session container")
        proc.signal_group(signal.SIGINT)
        assert proc.wait(timeout=30) == 128 + signal.SIGINT, proc.stderr
        assert "Traceback" not in proc.stderr
        wait_for(lambda: not mode.project_containers(project), 30, "the container to be removed")
    finally:
        proc.stop()


def test_odd_project_path_mounts_as_one_field(mode: Mode, hutch: Hutch) -> None:
    # A name that would inject mount options if the CSV field were not quoted.
    odd = hutch.root / 'p,readonly=false,bind-propagation=shared,"q:x'
    odd.mkdir()
    os.chown(odd, mode.uid, mode.gid)
    result = sh(hutch, odd, "pwd; touch made-here")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{odd}\n"
    assert (odd / "made-here").stat().st_uid == mode.uid


def test_resource_limits_or_their_absence_said(mode: Mode, hutch: Hutch, project: Path) -> None:
    probe = ("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max "
             "2>/dev/null || echo none; bash -c 'ulimit -u'")  # fmt: skip
    result = hutch.run("exec", "--pids", "321", "--", "sh", "-c", probe, cwd=project)
    assert result.returncode == 0, result.stderr
    pids_max, nproc = result.stdout.split()
    assert nproc == "321"
    cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    if mode.user is None or cgroup_v2:
        assert pids_max == "321"
        assert "limits:" not in result.stderr
        return
    # Rootless on cgroup v1: said in the summary every time, warned about once.
    assert "| limits: 321 processes only (rootless Podman on cgroup v1)" in result.stderr
    assert "warning: rootless Podman cannot set memory or CPU limits" in result.stderr
    again = hutch.run("exec", "--pids", "321", "--", "true", cwd=project)
    assert "limits: 321 processes only" in again.stderr
    assert "warning:" not in again.stderr


class _Outside(http.server.BaseHTTPRequestHandler):
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
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Outside)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_allowlist_egress_through_the_proxy(hutch: Hutch, project: Path, outside: int) -> None:
    probe = f"{VIA_PROXY} -sS -m 10 -w ' %{{http_code}}' http://127.0.0.1:{outside}/"
    allowed = sh(hutch, project, probe, "--allow", f"127.0.0.1:{outside}")
    assert allowed.stdout == f"{BODY} 200", allowed.stdout + allowed.stderr
    denied = sh(hutch, project, probe)
    assert denied.stdout.endswith("403") and BODY not in denied.stdout, denied.stdout


def test_doctor_names_the_engine_and_why(mode: Mode, hutch: Hutch, project: Path) -> None:
    result = hutch.run("doctor", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("[FAIL]")], result.stdout
    assert "[ok] engine: podman (podman)" in lines
    assert "       why: HUTCH_ENGINE=podman" in lines
    flavour = "rootless" if mode.user else "rootful"
    assert any(line.startswith("[ok] podman ") and f", {flavour} " in line for line in lines), lines
    assert "[ok] storage driver overlay" in lines
    assert "[ok] base image debian:bookworm-slim present" in lines


def test_doctor_detects_vfs_and_says_how_to_fix(mode: Mode, hutch: Hutch, project: Path) -> None:
    # A storage of its own, so that the flavour's real one stays as it is.
    store = hutch.root / "vfs-store"
    conf_text = (f'[storage]\ndriver = "vfs"\ngraphroot = "{store}/graph"\n'
                 f'runroot = "{store}/run"\n')  # fmt: skip
    env = hutch.env()
    if mode.user is None:
        conf = hutch.root / "storage.conf"
        env["CONTAINERS_STORAGE_CONF"] = str(conf)
    else:
        conf = hutch.config / "containers" / "storage.conf"
    conf.write_text(conf_text)
    result = hutch.run("doctor", cwd=project, env=env)
    lines = result.stdout.splitlines()
    at = lines.index("[warn] storage driver vfs: every launch copies the whole image (seconds, "
                     "not a fraction of one)")  # fmt: skip
    fix = lines[at + 1]
    assert f"write {conf} with the lines [storage] and driver = \"overlay\"" in fix, fix
    assert "podman system reset` (it deletes this user's Podman images" in fix, fix
    # The file alone does not switch it: the storage remembers vfs until a reset.
    conf.write_text(conf_text.replace('"vfs"', '"overlay"'))
    again = hutch.run("doctor", cwd=project, env=env).stdout.splitlines()
    at = again.index(lines[at])
    assert again[at + 1].startswith(f"       fix: {conf} already asks for overlay"), again
    assert "podman system reset" in again[at + 1]
