"""Build images from rendered recipes, with visible progress and a useful failure."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from hutch import process
from hutch.engines.base import Engine
from hutch.errors import BuildFailed, EngineUnavailable
from hutch.image.recipe import Recipe

STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*|STEP \d+/\d+: .*)$")
TAIL_LINES = 30


def write_context(recipe: Recipe, directory: Path) -> None:
    (directory / "Dockerfile").write_text(recipe.dockerfile)
    for item in recipe.files:
        path = directory / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.content)
        path.chmod(item.mode)


def build(
    engine: Engine,
    recipe: Recipe,
    log_dir: str,
    no_cache: bool = False,
    quiet: bool = False,
    out: Callable[[str], None] | None = None,
) -> None:
    """Build recipe.tag; raise BuildFailed naming the failed step, with the log tail."""
    emit = out or (lambda line: print(line, file=sys.stderr, flush=True))
    buildkit = engine.has_buildkit()
    os.makedirs(log_dir, exist_ok=True)
    log_path = Path(log_dir) / f"{recipe.tag.replace(':', '-').replace('/', '-')}.log"
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    step = ""
    started = time.monotonic()
    if not quiet:
        builder = "BuildKit" if buildkit else "classic builder"
        emit(f"hutch: building {recipe.tag} ({recipe.agent} {recipe.agent_version}, {builder})")
    with tempfile.TemporaryDirectory(prefix="hutch-build-") as context, log_path.open("w") as log:
        write_context(recipe, Path(context))
        command = engine.build_command(
            recipe.tag,
            context,
            {"io.hutch.recipe": recipe.digest},
            no_cache,
            buildkit,
        )

        def on_line(line: str) -> None:
            nonlocal step
            log.write(line + "\n")
            tail.append(line)
            if STEP.match(line):
                step = line
            if not quiet:
                emit(f"  {line}" if not STEP.match(line) else f"hutch: {line}")

        env = dict(os.environ)
        env.update(command.env)
        try:
            status = process.stream(command.argv, on_line, env=env)
        except FileNotFoundError as err:
            raise EngineUnavailable(
                f"{engine.binary} is not installed (not found on PATH)", engine.install_hint
            ) from err
    if status != 0:
        text = "\n".join(tail)
        engine.raise_if_unavailable(text)
        if quiet:
            for line in tail:
                emit(f"  {line}")
        else:
            emit("hutch: last lines of the build log:")
            for line in list(tail)[-12:]:
                emit(f"  {line}")
        raise BuildFailed(
            f"image build failed at {step or 'the first step'} (exit {status})",
            f"full log: {log_path}; fix the cause (a package name in [image], the network, "
            "the base image) and run `hutch build` again",
        )
    if not quiet:
        emit(f"hutch: built {recipe.tag} in {time.monotonic() - started:.0f}s")

