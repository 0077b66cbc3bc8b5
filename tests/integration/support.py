"""Helpers for the integration tests: the real `hutch` CLI against a real engine.

Every test runs hutch as a subprocess with an explicit environment whose HOME
and XDG directories live under one session directory (never os.environ). The
image is built once per session and engine; later tests seed their fresh state
with the same agent pin, so they find that image by tag instead of asking the
registry again. Containers are cleaned up by label: only those whose
io.hutch.project lies under this session's directory.

An `Engine` is one flavour the guarantee tests run on: Docker, rootful Podman
(hutch as root) or rootless Podman (hutch as an unprivileged user).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HUTCH = Path(sys.executable).parent / "hutch"
MANAGED = "label=io.hutch.managed=true"
BUILD_TIMEOUT = 1800.0


def as_user(user: str, env: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """argv run as this host user with exactly env, as a login would set it up
    (primary and supplementary groups).

    setpriv execs in place, unlike runuser, which forks and stays in front: so
    the process the test starts is hutch itself, signals reach it directly, and
    its exit status is hutch's own.
    """
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]  # fmt: skip


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


@dataclass(frozen=True)
class Engine:
    """One engine flavour, and how hutch and the engine's client are driven on it."""

    id: str  # "docker" | "podman" (rootful, hutch as root) | "podman-rootless"
    client: str  # the engine's command line: "docker" | "podman"
    uid: int  # who hutch runs as: the identity the sandbox must have
    gid: int
    # Run hutch and the client as this host user (via runuser), with this HOME
    # for the client (where its own storage.conf lives).
    user: str | None = None
    user_home: Path | None = None
    binary: str = str(HUTCH)
    env: dict[str, str] = field(default_factory=dict)  # for hutch and the client alike
    # Where hutch keeps a session's host files (egress socket, env file): its
    # XDG_RUNTIME_DIR, or (None) the run directory in its state directory.
    runtime_base: Path | None = None

    @property
    def podman(self) -> bool:
        return self.client == "podman"

    @property
    def rootless(self) -> bool:
        return self.user is not None and self.podman

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [self.client, *args]
        if self.user is None:
            env = {**os.environ, **self.env}
        else:
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
            if self.user_home is not None:
                env["HOME"] = str(self.user_home)
            argv = as_user(self.user, env, argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False, cwd="/", env=env)  # fmt: skip

    def containers_under(self, root: Path) -> list[dict[str, object]]:
        """`inspect` of every hutch container whose project lies under root."""
        ids = self.cli("ps", "-aq", "--no-trunc", "--filter", MANAGED).stdout.split()
        if not ids:
            return []
        inspected = self.cli("inspect", *ids)
        # A container can vanish between ps and inspect: inspect still prints the rest.
        items = json.loads(inspected.stdout or "[]")
        prefix = str(root).rstrip("/") + "/"
        found = []
        for item in items:
            labels = item.get("Config", {}).get("Labels") or {}
            if labels.get("io.hutch.project", "").startswith(prefix):
                found.append(item)
        return found

    def project_containers(self, project: Path, running_only: bool = True) -> list[dict[str, object]]:
        """Containers labelled with exactly this project path."""
        wanted = str(project)
        found = []
        for item in self.containers_under(project.parent):
            labels = item["Config"]["Labels"]  # type: ignore[index]
            if labels.get("io.hutch.project") != wanted:
                continue
            if running_only and not item["State"]["Running"]:  # type: ignore[index]
                continue
            found.append(item)
        return found

    def remove_under(self, root: Path) -> None:
        leftovers = [str(c["Id"]) for c in self.containers_under(root)]
        if leftovers:
            self.cli("rm", "-f", *leftovers, timeout=120)


DOCKER = Engine("docker", "docker", os.getuid(), os.getgid())


def containers_under(root: Path) -> list[dict[str, object]]:
    return DOCKER.containers_under(root)


def project_containers(project: Path, running_only: bool = True) -> list[dict[str, object]]:
    return DOCKER.project_containers(project, running_only)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """For trees a test just made; never follows a link (it may point anywhere)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    if root.is_symlink() or not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


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
    binary: str = str(HUTCH)
    # Run as this host user (via runuser) instead of the test runner's own.
    user: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    engine: Engine = DOCKER
    # The (uid, gid) that `own` hands files to when hutch runs as another user.
    owner: tuple[int, int] | None = None

    def own(self, *paths: Path) -> None:
        """What the test wrote stands for the user's own files: when hutch runs
        as another host user, hand them (recursively, links not followed) over."""
        if self.owner is None:
            return
        for path in paths:
            chown_tree(path, *self.owner)

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

    def agent_home(self, project: Path, agent: str = "claude") -> Path:
        """The agent's home for this project, found through the homes' index."""
        for index in (self.data / "hutch" / "projects").glob("*/project"):
            if index.read_bytes() == os.fsencode(project) + b"\n":
                return index.parent / "homes" / agent
        raise AssertionError(f"no agent home for {project}")

    @property
    def runtime_base(self) -> Path:
        """Where this hutch makes its sessions' runtime directories."""
        return self.engine.runtime_base or self.state / "hutch" / "run"

    def make_dirs(self) -> None:
        for path in (self.home, self.data, self.state, self.config, self.cache):
            path.mkdir(parents=True, exist_ok=True)

    def env(self, **overrides: str) -> dict[str, str]:
        default_path = "/usr/local/bin:/usr/bin:/bin"
        env = {
            "PATH": default_path if self.user else os.environ.get("PATH", default_path),
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

    def command(
        self, args: Sequence[str], env: Mapping[str, str] | None
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and process environment that run hutch with args."""
        wanted = dict(env) if env is not None else self.env()
        if self.user is None:
            return [self.binary, *args], wanted
        return as_user(self.user, wanted, [self.binary, *args]), {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(
        self,
        *args: str,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        argv, process_env = self.command(args, env)
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=process_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert_clean(result)
        return result

    def popen(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Running:
        """Start hutch in its own process group, as a shell would a foreground job.

        Output goes to files, not pipes: after a SIGKILL the engine client that
        hutch started lives on and would hold a pipe open.
        """
        argv, process_env = self.command(args, env)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        index = len(list(logs.glob("*.out")))
        out, err = logs / f"{index}.out", logs / f"{index}.err"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=err_file,
                process_group=0,
            )
        return Running(proc, out, err)


@dataclass
class Running:
    """A hutch process started in the background."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """What a terminal does on Ctrl-C: signal the whole foreground job."""
        os.killpg(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> None:
        """Make sure it is gone (after a failed assertion, say)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 20) -> None:
        """SIGTERM, as a service manager would, then make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.stop()



@dataclass(frozen=True)
class Built:
    tag: str
    pins: Path  # versions.json of the state that built it
    hutch: Hutch


@dataclass(frozen=True)
class HostUser:
    name: str
    uid: int
    gid: int
    venv: Path


def seed_pins(hutch: Hutch, built: Built) -> None:
    """Give a fresh state the pin the image was built with (no registry lookup)."""
    target = hutch.state / "hutch" / "versions.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.pins, target)

