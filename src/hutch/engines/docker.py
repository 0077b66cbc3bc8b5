"""Docker backend: plan -> docker command lines; where its daemon is; its doctor checks."""

from __future__ import annotations

import grp
import json
import os
from typing import TYPE_CHECKING

from hutch import layers, process
from hutch.engines import seccomp
from hutch.engines.base import PROXY_VARIABLES, BuildCommand, Check, Engine, bind_mount_arg, csv_field
from hutch.errors import EngineUnavailable, HutchError
from hutch.paths import read_text
from hutch.plan import Mount, RunPlan

if TYPE_CHECKING:
    from collections.abc import Mapping

DOCKER_SOCKET = "/var/run/docker.sock"


class Docker(Engine):
    name = "docker"
    install_hint = "install Docker (Debian: sudo apt-get install docker.io) and start it"

    def mount_args(self, mount: Mount) -> list[str]:
        if mount.upper is None or mount.work is None:
            return ["--mount", bind_mount_arg(mount)]
        # A layer: an anonymous local volume of type overlay, mounted by the
        # daemon when the container starts and removed with it. userxattr keeps
        # the upper readable without privileges.
        options = f"lowerdir={mount.source},upperdir={mount.upper},workdir={mount.work},userxattr"
        fields = [
            "type=volume", csv_field(f"target={mount.target}"), "volume-driver=local",
            "volume-opt=type=overlay", "volume-opt=device=overlay", csv_field(f"volume-opt=o={options}"),
        ]  # fmt: skip
        return ["--mount", ",".join(fields)]

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
            *(["--security-opt", f"seccomp={plan.seccomp}"] if plan.seccomp else []),
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
            argv += self.mount_args(mount)
        # Secret values go through the env file (see plan.ENV_FILE), never argv.
        for var in plan.env:
            if not var.secret:
                argv += ["--env", f"{var.name}={var.value}"]
        argv.append(plan.image)
        argv += plan.command
        return argv

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
        # The predefined proxy arguments, by name only: a value comes from the
        # client's environment, so a proxy's credentials never land in argv. A
        # name missing there is passed as unset, which also keeps out the
        # proxies of the client's config.json that Docker would add itself.
        for name in PROXY_VARIABLES:
            argv += ["--build-arg", name]
        argv.append(context)
        return BuildCommand(tuple(argv), env, buildkit, () if proxy else PROXY_VARIABLES)

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

    def doctor_checks(self) -> list[Check]:
        try:
            version = self.version()
        except HutchError as err:
            return [Check("fail", err.message, err.hint or "", fatal=True), *_socket_checks()]
        if not version.ok:
            return [Check("fail", f"{self.name} daemon: {version.stderr.strip()}", "start the daemon",
                          fatal=True), *_socket_checks()]  # fmt: skip
        checks = [Check("ok", f"{self.name} daemon answers (server {version.stdout.strip()})")]
        checks += _socket_checks()
        if self.has_buildkit():
            checks.append(Check("ok", "BuildKit (buildx) available"))
        else:
            checks.append(Check("ok", "buildx not installed: hutch uses the classic builder"))
        checks.append(Check(*seccomp.doctor_check()))
        checks.append(Check(*layers.doctor_check()))
        return checks


def _socket_checks() -> list[Check]:
    """Whether this user may use the daemon's local socket, and the group that grants it."""
    sock = DOCKER_SOCKET
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return []
    if host:
        sock = host[len("unix://") :]
    if not os.path.exists(sock):
        return []
    ok = os.access(sock, os.R_OK | os.W_OK)
    try:
        group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    except KeyError:
        group = str(os.stat(sock).st_gid)
    return [Check("ok" if ok else "fail", f"socket {sock} accessible (group {group})",
                  f"sudo usermod -aG {group} $USER, then log in again")]  # fmt: skip


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


def daemon_problem() -> str:
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
