"""The engine registry: every engine hutch can drive, and how one is chosen.

An engine is a subclass of hutch.engines.base.Engine in a module of its own;
adding one means adding its factory to ENGINES. The config schema, the
`--engine` flag and HUTCH_ENGINE all accept exactly these names (and "auto").
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, NamedTuple

from hutch.engines.base import Engine
from hutch.errors import EngineUnavailable, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable


def _docker() -> Engine:
    from hutch.engines.docker import Docker

    return Docker()


def _podman() -> Engine:
    from hutch.engines.podman import Podman

    return Podman()


ENGINES: dict[str, Callable[[], Engine]] = {"docker": _docker, "podman": _podman}
AUTO = "auto"


def choices() -> tuple[str, ...]:
    """What an engine setting may say: an engine's name, or "auto"."""
    return (*ENGINES, AUTO)


class Choice(NamedTuple):
    engine: Engine
    why: str


def choose(name: str) -> Engine:
    """Pick the engine: an explicit name, HUTCH_ENGINE, or the one that works here."""
    return select(name).engine


def select(name: str) -> Choice:
    """The engine and, for `hutch doctor`, why it was picked."""
    if name == AUTO:
        from_env = os.environ.get("HUTCH_ENGINE", "")
        if from_env:
            if from_env not in choices():
                raise UsageError(
                    f"HUTCH_ENGINE={from_env!r} is not an engine",
                    f"set HUTCH_ENGINE to {', '.join(ENGINES)} or {AUTO} (or unset it)",
                )
            if from_env != AUTO:
                return Choice(ENGINES[from_env](), f"HUTCH_ENGINE={from_env}")
        name, why = detect()
        return Choice(ENGINES[name](), why)
    if name not in ENGINES:
        raise UsageError(
            f"unknown engine {name!r}", "use " + " or ".join(f"--engine {known}" for known in ENGINES)
        )
    return Choice(ENGINES[name](), "requested")


def detect() -> tuple[str, str]:
    """Docker when its daemon answers, else Podman when installed (it needs no
    daemon), else whichever is installed so that its own errors explain the fix.

    Runs before every launch in auto mode, so it asks no engine anything: a
    connect to Docker's socket tells whether its daemon listens and lets us in.
    """
    from hutch.engines.docker import daemon_problem

    docker = shutil.which("docker")
    podman = shutil.which("podman")
    docker_problem = "docker is not installed"
    if docker:
        docker_problem = daemon_problem()
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
