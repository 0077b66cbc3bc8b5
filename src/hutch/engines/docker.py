"""Docker backend: plan -> docker command lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hutch import process
from hutch.engines.base import BuildCommand, Engine, bind_mount_arg
from hutch.errors import EngineUnavailable
from hutch.plan import Mount, RunPlan

if TYPE_CHECKING:
    from collections.abc import Mapping

# Build arguments Docker predefines for proxies; passed by name only, so a
# corporate proxy's credentials never land in argv.
PROXY_BUILD_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class Docker(Engine):
    name = "docker"
    install_hint = "install Docker (Debian: sudo apt-get install docker.io) and start it"

    def mount_arg(self, mount: Mount) -> str:
        return bind_mount_arg(mount)

    def run_argv(self, plan: RunPlan) -> list[str]:
        argv = [self.binary, "run", "--rm", "--pull", "never", "--name", plan.name]
        if plan.interactive:
            argv.append("--interactive")
        if plan.tty:
            argv.append("--tty")
        for key, value in plan.labels:
            argv += ["--label", f"{key}={value}"]
        argv += [
            "--user",
            f"{plan.identity.uid}:{plan.identity.gid}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--init",
            "--network",
            plan.network,
            "--hostname",
            plan.hostname,
            "--memory",
            plan.memory,
            "--cpus",
            f"{plan.cpus:g}",
            "--pids-limit",
            str(plan.pids),
            "--workdir",
            plan.workdir,
        ]
        for mount in plan.mounts:
            argv += ["--mount", self.mount_arg(mount)]
        # Secret values go through the env file (see plan.ENV_FILE), never argv.
        for var in plan.env:
            if not var.secret:
                argv += ["--env", f"{var.name}={var.value}"]
        argv.append(plan.image)
        argv += plan.command
        return argv

    def build_command(
        self, tag: str, context: str, labels: Mapping[str, str], no_cache: bool, buildkit: bool
    ) -> BuildCommand:
        if buildkit:
            argv = [self.binary, "buildx", "build", "--load", "--progress=plain"]
            env = {"DOCKER_BUILDKIT": "1"}
        else:
            # --force-rm: the classic builder keeps a failed step's container otherwise.
            argv = [self.binary, "build", "--force-rm"]
            env = {"DOCKER_BUILDKIT": "0"}
        argv += ["--tag", tag]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        if no_cache:
            argv.append("--no-cache")
        for name in PROXY_BUILD_ARGS:
            argv += ["--build-arg", name]
        argv.append(context)
        return BuildCommand(tuple(argv), env, buildkit)

    def has_buildkit(self) -> bool:
        try:
            result = process.capture([self.binary, "buildx", "version"], timeout=20)
        except (FileNotFoundError, process.Timeout):
            return False
        return result.ok

    def raise_if_unavailable(self, stderr: str) -> None:
        text = stderr.lower()
        if "permission denied" in text and ("docker.sock" in text or "daemon" in text):
            raise EngineUnavailable(
                "permission denied on the Docker socket",
                "add yourself to the docker group (sudo usermod -aG docker $USER), "
                "then log in again; or use rootless Podman with --engine podman",
            )
        if "cannot connect to the docker daemon" in text or "is the docker daemon running" in text:
            raise EngineUnavailable(
                "the Docker daemon is not running",
                "start it: sudo systemctl start docker (or run dockerd)",
            )
