"""Engine backends, each its own command-line builder."""

from __future__ import annotations

import json
import os
import shutil
from typing import NamedTuple

from hutch.engines.base import Engine
from hutch.errors import EngineUnavailable, UsageError
from hutch.paths import read_text

ENGINES = ("docker", "podman")
DOCKER_SOCKET = "/var/run/docker.sock"


class Choice(NamedTuple):
    engine: Engine
    why: str


def choose(name: str) -> Engine:
    """Pick the engine: an explicit name, HUTCH_ENGINE, or the one that works here."""
    return select(name).engine


def select(name: str) -> Choice:
    """The engine and, for `hutch doctor`, why it was picked."""
    if name == "auto":
        from_env = os.environ.get("HUTCH_ENGINE", "")
        if from_env:
            if from_env not in (*ENGINES, "auto"):
                raise UsageError(
                    f"HUTCH_ENGINE={from_env!r} is not an engine",
                    "set HUTCH_ENGINE to docker, podman or auto (or unset it)",
                )
            if from_env != "auto":
                return Choice(_make(from_env), f"HUTCH_ENGINE={from_env}")
        name, why = detect()
        return Choice(_make(name), why)
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}", "use --engine docker or --engine podman")
    return Choice(_make(name), "requested")


def _make(name: str) -> Engine:
    if name == "docker":
        from hutch.engines.docker import Docker

        return Docker()
    from hutch.engines.podman import Podman

    return Podman()


def detect() -> tuple[str, str]:
    """Docker when its daemon answers, else Podman when installed (it needs no
    daemon), else whichever is installed so that its own errors explain the fix.

    Runs before every launch in auto mode, so it asks no engine anything: a
    connect to Docker's socket tells whether its daemon listens and lets us in.
    """
    docker = shutil.which("docker")
    podman = shutil.which("podman")
    docker_problem = "docker is not installed"
    if docker:
        docker_problem = _docker_problem()
        if not docker_problem:
            return "docker", "auto: the Docker daemon answers"
    if podman:
        return "podman", f"auto: {docker_problem}; Podman is installed"
    if docker:
        return "docker", f"auto: only Docker is installed ({docker_problem})"
    raise EngineUnavailable(
        "no container engine found (neither docker nor podman is on PATH)",
        "install one: sudo apt-get install podman uidmap slirp4netns catatonit (rootless, no "
        "daemon), or docker.io",
    )


def docker_socket() -> str | None:
    """The Docker daemon's Unix socket; None when Docker is configured to be
    reached otherwise (tcp:// or ssh:// in DOCKER_HOST, or a context)."""
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host[len("unix://") :] if host.startswith("unix://") else None
    if os.environ.get("DOCKER_CONTEXT") or _docker_context():
        return None
    return DOCKER_SOCKET


def docker_config_file() -> str:
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")


def _docker_problem() -> str:
    """Why Docker looks unusable, or "" when its daemon accepts a connection."""
    path = docker_socket()
    if path is None:
        return ""  # configured on purpose; probing would cost a round trip
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(path)
    except FileNotFoundError:
        return f"the Docker daemon is not running (no {path})"
    except PermissionError:
        return f"you may not use the Docker socket {path}"
    except OSError as err:
        return f"the Docker daemon does not answer on {path} ({err.strerror or err})"
    finally:
        sock.close()
    return ""


def _docker_context() -> str:
    """A non-default `docker context use` choice: Docker then is configured on purpose."""
    try:
        data = json.loads(read_text(docker_config_file()))
    except (OSError, ValueError):
        return ""
    current = data.get("currentContext", "") if isinstance(data, dict) else ""
    return current if isinstance(current, str) and current != "default" else ""
