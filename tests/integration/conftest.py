"""Integration fixtures: the real `hutch` CLI against a real Docker engine.

Every test runs hutch as a subprocess with an explicit environment whose HOME
and XDG directories live under one session directory (never os.environ). The
image is built once per session; later tests seed their fresh state with the
same agent pin, so they find that image by tag instead of asking the registry
again. Containers are cleaned up by label: only those whose io.hutch.project
lies under this session's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HUTCH = Path(sys.executable).parent / "hutch"
MANAGED = "label=io.hutch.managed=true"
BUILD_TIMEOUT = 1800.0


def docker(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def docker_reason() -> str | None:
    """Why the engine cannot be used, or None when `docker info` answers."""
    try:
        result = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except FileNotFoundError:
        return "docker is not installed (not on PATH)"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30s"
    if result.returncode != 0:
        return f"`docker info` failed: {result.stderr.strip()[:300]}"
    return None


def containers_under(root: Path) -> list[dict[str, object]]:
    """`docker inspect` of every hutch container whose project lies under root."""
    ids = docker("ps", "-aq", "--no-trunc", "--filter", MANAGED).stdout.split()
    if not ids:
        return []
    inspected = docker("inspect", *ids)
    # A container can vanish between ps and inspect: inspect still prints the rest.
    items = json.loads(inspected.stdout or "[]")
    prefix = str(root).rstrip("/") + "/"
    found = []
    for item in items:
        labels = item.get("Config", {}).get("Labels") or {}
        if labels.get("io.hutch.project", "").startswith(prefix):
            found.append(item)
    return found


def project_containers(project: Path, running_only: bool = True) -> list[dict[str, object]]:
    """Containers labelled with exactly this project path."""
    wanted = str(project)
    found = []
    for item in containers_under(project.parent):
        labels = item["Config"]["Labels"]  # type: ignore[index]
        if labels.get("io.hutch.project") != wanted:
            continue
        if running_only and not item["State"]["Running"]:  # type: ignore[index]
            continue
        found.append(item)
    return found


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@dataclass
class Hutch:
    """One isolated hutch user: its HOME and XDG dirs, and how to call the CLI."""

    root: Path
    argv0: tuple[str, ...] = (str(HUTCH),)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data(self) -> Path:
        return self.root / "xdg" / "data"

    @property
    def state(self) -> Path:
        return self.root / "xdg" / "state"

    @property
    def config(self) -> Path:
        return self.root / "xdg" / "config"

    @property
    def cache(self) -> Path:
        return self.root / "xdg" / "cache"

    def make_dirs(self) -> None:
        for path in (self.home, self.data, self.state, self.config, self.cache):
            path.mkdir(parents=True, exist_ok=True)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config),
            "XDG_DATA_HOME": str(self.data),
            "XDG_STATE_HOME": str(self.state),
            "XDG_CACHE_HOME": str(self.cache),
            "LANG": "C.UTF-8",
        }
        if "DOCKER_HOST" in os.environ:
            env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def argv(self, args: Sequence[str]) -> list[str]:
        return [*self.argv0, *args]

    def run(
        self,
        *args: str,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(args),
            cwd=cwd,
            env=dict(env) if env is not None else self.env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert_clean(result)
        return result

    def popen(
        self, *args: str, cwd: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start hutch in its own process group, as a shell would a foreground job."""
        return subprocess.Popen(
            self.argv(args),
            cwd=cwd,
            env=dict(env) if env is not None else self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            process_group=0,
        )


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=30)


# -- session fixtures ----------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> None:
    reason = docker_reason()
    if reason is not None:
        pytest.skip(f"no usable Docker engine: {reason}")


@pytest.fixture(scope="session")
def it_root(engine: None) -> Iterator[Path]:
    """The session's directory. Outside pytest's 0700 basetemp, so that the
    non-root test user can reach its own project below it."""
    root = Path(tempfile.mkdtemp(prefix="hutch-it-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        leftovers = [str(c["Id"]) for c in containers_under(root)]
        if leftovers:
            docker("rm", "-f", *leftovers, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Built:
    tag: str
    pins: Path  # versions.json of the state that built it
    hutch: Hutch


@pytest.fixture(scope="session")
def built(it_root: Path) -> Built:
    """`hutch build` once; the image is then reused by every test."""
    shared = Hutch(it_root / "shared")
    shared.make_dirs()
    project = it_root / "shared" / "proj"
    project.mkdir()
    result = shared.run("build", cwd=project, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("hutch-claude:"), result.stdout
    pins = shared.state / "hutch" / "versions.json"
    assert pins.is_file(), "hutch build wrote no agent pin"
    assert docker("image", "inspect", tag).returncode == 0
    return Built(tag, pins, shared)


def seed_pins(hutch: Hutch, built: Built) -> None:
    """Give a fresh state the pin the image was built with (no registry lookup)."""
    target = hutch.state / "hutch" / "versions.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.pins, target)


@pytest.fixture
def hutch(built: Built, it_root: Path, request: pytest.FixtureRequest) -> Hutch:
    """A fresh hutch user (HOME, XDG dirs) that finds the built image by tag."""
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=it_root))
    root.chmod(0o755)
    h = Hutch(root)
    h.make_dirs()
    seed_pins(h, built)
    return h


@pytest.fixture
def project(hutch: Hutch) -> Path:
    path = hutch.root / "proj"
    path.mkdir()
    return path


# -- a non-root host user with an unusual UID/GID ----------------------------------

IT_USER = "hutch-it"
IT_GROUP = "hutch-it-grp"
IT_UID = 1234
IT_GID = 4321
IT_VENV = Path("/opt/hutch-it-venv")


@dataclass(frozen=True)
class HostUser:
    name: str
    uid: int
    gid: int
    venv: Path


def _ensure_host_user() -> str:
    import grp
    import pwd

    try:
        grp.getgrgid(IT_GID)
    except KeyError:
        subprocess.run(["groupadd", "-g", str(IT_GID), IT_GROUP], check=True)
    try:
        name = pwd.getpwuid(IT_UID).pw_name
    except KeyError:
        subprocess.run(
            ["useradd", "-u", str(IT_UID), "-g", str(IT_GID), "-M",
             "-d", "/nonexistent", "-s", "/bin/sh", IT_USER],
            check=True,
        )  # fmt: skip
        name = IT_USER
    entry = pwd.getpwuid(IT_UID)
    assert entry.pw_gid == IT_GID, f"host user {name} exists with primary gid {entry.pw_gid}"
    # Whatever group owns the engine socket, the user needs it (as a docker user would).
    sock = "/var/run/docker.sock"
    if os.path.exists(sock):
        sock_group = grp.getgrgid(os.stat(sock).st_gid).gr_name
        if name not in grp.getgrnam(sock_group).gr_mem:
            subprocess.run(["usermod", "-aG", sock_group, name], check=True)
    return name


def _install_hutch(venv: Path) -> None:
    """Install this checkout for a user who cannot read the test runner's Python.

    Debian's own python3 makes the venv; the package is copied in the way pip
    lays out a pure-Python package, so no build backend or network is needed.
    """
    python = Path("/usr/bin/python3")
    assert python.exists(), "the non-root test needs the system python3 (/usr/bin/python3)"
    subprocess.run([str(python), "-m", "venv", "--without-pip", "--clear", str(venv)], check=True)
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shutil.copytree(
        REPO_ROOT / "src" / "hutch",
        Path(site) / "hutch",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    script = venv / "bin" / "hutch"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\nfrom hutch.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(venv):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


@pytest.fixture(scope="session")
def host_user(engine: None) -> HostUser:
    name = _ensure_host_user()
    _install_hutch(IT_VENV)
    return HostUser(name, IT_UID, IT_GID, IT_VENV)


@pytest.fixture
def user_hutch(host_user: HostUser, built: Built, it_root: Path,
               request: pytest.FixtureRequest) -> Hutch:  # fmt: skip
    """hutch run as the non-root host user, with a HOME and XDG dirs it owns."""
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=it_root))
    root.chmod(0o755)
    h = Hutch(
        root,
        argv0=("runuser", "-u", host_user.name, "--", "env", "-i", str(host_user.venv / "bin" / "hutch")),
    )  # fmt: skip
    h.make_dirs()
    seed_pins(h, built)
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, host_user.uid, host_user.gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), host_user.uid, host_user.gid)
    return h
