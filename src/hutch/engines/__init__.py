"""Engine backends, each its own command-line builder."""

from __future__ import annotations

import os
import shutil

from hutch.engines.base import Engine
from hutch.errors import EngineUnavailable, UsageError

ENGINES = ("docker", "podman")


def choose(name: str) -> Engine:
    """Pick the engine: an explicit name, HUTCH_ENGINE, or the first one installed."""
    if name == "auto":
        name = os.environ.get("HUTCH_ENGINE", "") or "auto"
    if name == "auto":
        for candidate in ENGINES:
            if shutil.which(candidate):
                name = candidate
                break
        else:
            raise EngineUnavailable(
                "no container engine found (neither docker nor podman is on PATH)",
                "install one: sudo apt-get install docker.io (or podman)",
            )
    if name == "docker":
        from hutch.engines.docker import Docker

        return Docker()
    if name == "podman":
        raise EngineUnavailable(
            "the podman engine is not supported by this version of hutch yet",
            "use --engine docker",
        )
    raise UsageError(f"unknown engine {name!r}", "use --engine docker or --engine podman")
