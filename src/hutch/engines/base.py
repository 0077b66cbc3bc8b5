"""What every engine backend provides. Each engine builds its own argv."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple

from hutch import process
from hutch.errors import EngineUnavailable
from hutch.plan import Mount, RunPlan

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MANAGED = "io.hutch.managed=true"


class Container(NamedTuple):
    id: str
    name: str
    state: str
    labels: Mapping[str, str]

    @property
    def session(self) -> str:
        return self.labels.get("io.hutch.session", "")


# The proxy variables the engines know (Docker's predefined build arguments).
PROXY_VARIABLES = tuple(
    name
    for upper in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY", "NO_PROXY")
    for name in (upper, upper.lower())
)


class BuildCommand(NamedTuple):
    argv: tuple[str, ...]
    env: Mapping[str, str]  # set in the engine client's environment
    buildkit: bool
    unset: tuple[str, ...] = ()  # removed from the engine client's environment


class Check(NamedTuple):
    """One line of `hutch doctor`."""

    state: str  # "ok", "fail", "warn" (works, but worse than it should) or "note"
    what: str
    fix: str = ""
    # The engine cannot be used at all: the checks that need it are skipped.
    fatal: bool = False


class LimitsGap(NamedTuple):
    """Resource limits of a plan that the engine cannot enforce on this host."""

    summary: str  # a few words for the launch summary
    warning: str  # what is off, why, and how to get it enforced


def csv_field(text: str) -> str:
    """Quote one --mount field the way the engines' CSV parser reads it back."""
    if any(c in text for c in ',"\n\r') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def bind_mount_arg(mount: Mount) -> str:
    """A `--mount` value in the CSV form both Docker and Podman (4.3 checked) read:
    a quoted field may hold commas, quotes, '=' and newlines, so an odd path is
    one field and never an extra option."""
    fields = ["type=bind", csv_field(f"source={mount.source}"), csv_field(f"target={mount.target}")]
    if mount.readonly:
        fields.append("readonly")
    return ",".join(fields)


class Engine(ABC):
    name: str = ""
    install_hint: str = ""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or self.name

    # -- argv builders (pure) -------------------------------------------------

    @abstractmethod
    def run_argv(self, plan: RunPlan) -> list[str]:
        """The full command line that starts the sandbox described by plan."""

    @abstractmethod
    def build_command(
        self,
        tag: str,
        context: str,
        *,
        labels: Mapping[str, str],
        no_cache: bool,
        buildkit: bool,
        proxy: bool = False,
    ) -> BuildCommand:
        """The command line that builds an image from a prepared context. The
        host's proxy variables (and any credentials in them) reach the build's
        steps only with proxy (the user's `[image] build_proxy`)."""

    @abstractmethod
    def mount_args(self, mount: Mount) -> list[str]:
        """The engine options that make one mount of the plan."""

    def check_ready(self) -> None:
        """Raise EngineUnavailable when a launch cannot work on this host (cheap:
        no engine call); the run's own error, with the fix `hutch doctor` gives."""
        return None

    def limits_gap(self, plan: RunPlan) -> LimitsGap | None:
        """None when every limit in the plan is enforced."""
        return None

    def client_env(self, plan: RunPlan, environ: Mapping[str, str]) -> dict[str, str]:
        """Environment for the engine client (its own settings such as DOCKER_HOST)."""
        return dict(environ)

    # -- engine calls ---------------------------------------------------------

    def call(self, args: Sequence[str], timeout: float | None = 60) -> process.Result:
        argv = [self.binary, *args]
        try:
            result = process.capture(argv, timeout=timeout)
        except FileNotFoundError as err:
            raise EngineUnavailable(
                f"{self.binary} is not installed (not found on PATH)", self.install_hint
            ) from err
        except process.Timeout as err:
            raise EngineUnavailable(
                f"{self.binary} did not answer within {timeout:.0f}s",
                f"check that the {self.name} service is healthy: {self.binary} info",
            ) from err
        if not result.ok:
            self.raise_if_unavailable(result.stderr)
        return result

    @abstractmethod
    def doctor_checks(self) -> list[Check]:
        """`hutch doctor`'s checks of this engine on this host, each with its fix."""

    @abstractmethod
    def raise_if_unavailable(self, stderr: str) -> None:
        """Raise EngineUnavailable when stderr says the daemon cannot be reached."""

    def image_id(self, tag: str) -> str | None:
        result = self.call(["image", "inspect", "--format", "{{.Id}}", tag])
        return result.stdout.strip() if result.ok else None

    def containers(self, label: str = MANAGED) -> list[Container]:
        ids = self.call(["ps", "-aq", "--no-trunc", "--filter", f"label={label}"])
        if not ids.ok:
            raise EngineUnavailable(f"{self.binary} ps failed: {ids.stderr.strip()}")
        wanted = ids.stdout.split()
        if not wanted:
            return []
        inspected = self.call(["inspect", *wanted])
        if not inspected.ok and not inspected.stdout.strip():
            return []
        found: list[Container] = []
        for item in json.loads(inspected.stdout or "[]"):
            labels = item.get("Config", {}).get("Labels") or {}
            found.append(
                Container(
                    id=item["Id"][:12],
                    name=item.get("Name", "").lstrip("/"),
                    state=item.get("State", {}).get("Status", "unknown"),
                    labels={str(k): str(v) for k, v in labels.items()},
                )
            )
        return found

    def remove(self, names: Sequence[str]) -> None:
        if names:
            self.call(["rm", "-f", *names])

    def has_buildkit(self) -> bool:
        return False

    def version(self) -> process.Result:
        return self.call(["version", "--format", "{{.Server.Version}}"], timeout=20)


def owner_pid_alive(labels: Mapping[str, str], hostname: str) -> bool:
    pid = labels.get("io.hutch.pid", "")
    if labels.get("io.hutch.host") != hostname or not pid.isdigit():
        # Another machine's session (shared engine): not ours to judge.
        return True
    return process.is_alive(int(pid))


def host_name() -> str:
    return os.uname().nodename
