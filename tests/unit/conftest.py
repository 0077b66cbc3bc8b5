"""Unit-test fixtures: every test gets its own HOME and XDG directories and no
engine choice from the environment; `fake_engine` registers an engine that
needs no container runtime, through the real engine registry.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from hutch import engines, process
from hutch.engines.base import BuildCommand, Check, Container, Engine, bind_mount_arg
from hutch.plan import Mount, RunPlan


@dataclass(frozen=True)
class Isolated:
    """Where this test's hutch user lives; hutch's own directories below these."""

    home: Path
    config: Path
    data: Path
    state: Path
    runtime: Path

    @property
    def hutch_state(self) -> Path:
        return self.state / "hutch"


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Isolated]:
    root = tmp_path_factory.mktemp("user")
    # Short, as the real one is: a session's socket path must fit in sun_path.
    runtime = Path(tempfile.mkdtemp(prefix="hutch-rt-", dir="/tmp"))
    found = Isolated(root / "home", root / "config", root / "data", root / "state", runtime)
    for path in (found.home, found.config, found.data, found.state):
        path.mkdir()
    monkeypatch.setenv("HOME", str(found.home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(found.config))
    monkeypatch.setenv("XDG_DATA_HOME", str(found.data))
    monkeypatch.setenv("XDG_STATE_HOME", str(found.state))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var in ("HUTCH_ENGINE", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "CONTAINER_HOST"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield found
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


class FakeEngine(Engine):
    """An engine without a runtime: images and containers are sets and lists
    here, and a sandbox is a Python process that prints what it was given.

    The sandbox's exit status is `status`; its output is `sandbox-ran` and
    the plan's session id, so a test sees that the launch happened.
    """

    name = "fake"
    install_hint = "the fake engine is always installed"

    def __init__(self) -> None:
        super().__init__(sys.executable)
        self.images: set[str] = set()
        self.all_images_present = True
        self.containers_listed: list[Container] = []
        self.removed: list[str] = []
        self.plans: list[RunPlan] = []
        self.status = 0

    def run_argv(self, plan: RunPlan) -> list[str]:
        self.plans.append(plan)
        code = f"import sys; print('sandbox-ran', {plan.session!r}); sys.exit({self.status})"
        return [sys.executable, "-c", code]

    def build_command(
        self, tag: str, context: str, *, labels: Mapping[str, str], no_cache: bool, buildkit: bool,
        proxy: bool = False,
    ) -> BuildCommand:  # fmt: skip
        self.images.add(tag)
        return BuildCommand((sys.executable, "-c", "print('Step 1/1 : built')"), {}, buildkit)

    def mount_args(self, mount: Mount) -> list[str]:
        return ["--mount", bind_mount_arg(mount)]

    def doctor_checks(self) -> list[Check]:
        return [Check("ok", "fake engine answers")]

    def raise_if_unavailable(self, stderr: str) -> None:
        return None

    def call(self, args: Sequence[str], timeout: float | None = 60) -> process.Result:
        raise AssertionError(f"the fake engine has no command line: {list(args)}")

    def image_id(self, tag: str) -> str | None:
        return "sha256:fake" if self.all_images_present or tag in self.images else None

    def containers(self, label: str = "io.hutch.managed=true") -> list[Container]:
        return [c for c in self.containers_listed if c.name not in self.removed]

    def remove(self, names: Sequence[str]) -> None:
        self.removed += names


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The fake engine, registered as "fake" and chosen through HUTCH_ENGINE."""
    engine = FakeEngine()
    monkeypatch.setitem(engines.ENGINES, "fake", lambda: engine)
    monkeypatch.setenv("HUTCH_ENGINE", "fake")
    return engine
