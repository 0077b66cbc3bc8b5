"""Podman backend, rootful and rootless: plan -> podman command lines.

Its own builder, not Docker's with exceptions: the flags that differ are the
ones that carry the guarantees (user namespace, resource limits, what Podman
would otherwise copy in from the host), so each is spelled out here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
from typing import TYPE_CHECKING, NamedTuple

from hutch import layers, process
from hutch.engines import seccomp
from hutch.engines.base import PROXY_VARIABLES, BuildCommand, Check, Engine, LimitsGap, bind_mount_arg
from hutch.errors import EngineUnavailable, HutchError, SetupFailed
from hutch.plan import Mount, RunPlan

if TYPE_CHECKING:
    from collections.abc import Mapping

UNLIMITED = resource.RLIM_INFINITY

SUBID_FIX = (
    "give your user subordinate ID ranges: sudo usermod --add-subuids 100000-165535 "
    "--add-subgids 100000-165535 $USER, then run: podman system migrate"
)
TUN_DEVICE = "/dev/net/tun"
# Where Podman looks for the init it runs as PID 1 (`--init`), by distribution.
CATATONIT_PATHS = (
    "/usr/libexec/podman/catatonit",
    "/usr/local/libexec/podman/catatonit",
    "/usr/lib/podman/catatonit",
)
# Without that init every `podman run --init` fails: doctor and the run say the same.
INIT_FIX = "sudo apt-get install catatonit (or point init_path in containers.conf at an init)"


class Rlimit(NamedTuple):
    soft: int
    hard: int


class PodmanHost(NamedTuple):
    """What the argv depends on besides the plan; gathered once per engine."""

    rootless: bool
    cgroup_v2: bool
    nofile: Rlimit
    nproc: Rlimit
    init: str | None  # the init Podman runs as PID 1 (catatonit), None when there is none

    @property
    def limits_work(self) -> bool:
        # Rootless Podman has no cgroup of its own to limit on cgroup v1 (no
        # delegation): it would drop --memory/--cpus/--pids-limit with a warning.
        # hutch then runs without memory and CPU limits rather than refusing:
        # refusing would rule rootless Podman out on every cgroup v1 host, and
        # its user-namespace boundary is the stronger one against the threats
        # that matter more (identity, files, secrets). What stays: the process
        # cap as RLIMIT_NPROC (a fork bomb still stops), and honesty about the
        # rest: the launch summary says so every time, a warning with the fix
        # once per user, and `hutch doctor`.
        return self.cgroup_v2 or not self.rootless


def _rlimit(which: int) -> Rlimit:
    soft, hard = resource.getrlimit(which)
    return Rlimit(soft, hard)


def detect_host() -> PodmanHost:
    """Cheap facts for every launch: no `podman info` (a third of a second rootless).

    Local Podman is rootless exactly when it runs with a non-zero effective UID;
    `hutch doctor` cross-checks this against `podman info`. cgroup v2 is mounted
    unified at /sys/fs/cgroup, whose root then lists cgroup.controllers.
    """
    rootless = os.geteuid() != 0
    return PodmanHost(
        rootless=rootless,
        cgroup_v2=os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
        nofile=_rlimit(resource.RLIMIT_NOFILE),
        nproc=_rlimit(resource.RLIMIT_NPROC),
        init=find_init(rootless),
    )


def find_init(rootless: bool) -> str | None:
    """catatonit where distributions put it, else containers.conf's init_path."""
    found = next((path for path in CATATONIT_PATHS if os.path.exists(path)), None)
    if found is None:
        configured = _configured_init_path(rootless)
        if configured is not None and os.path.exists(configured):
            found = configured
    return found


def _configured_init_path(rootless: bool) -> str | None:
    """[containers] init_path from containers.conf; later files override earlier ones."""
    import tomllib

    files = ["/usr/share/containers/containers.conf", "/etc/containers/containers.conf"]
    if rootless:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        files.append(os.path.join(config, "containers", "containers.conf"))
    if os.environ.get("CONTAINERS_CONF"):
        files = [os.environ["CONTAINERS_CONF"]]
    found = None
    for path in files:
        try:
            with open(path, "rb") as handle:
                table = tomllib.load(handle).get("containers", {})
        except (OSError, ValueError):  # missing, unreadable or not TOML: Podman's business
            continue
        value = table.get("init_path") if isinstance(table, dict) else None
        if isinstance(value, str) and value:
            found = value
    return found


def _ulimit(name: str, limit: Rlimit) -> list[str]:
    if limit.soft == UNLIMITED or limit.hard == UNLIMITED:
        # Podman's own default (2^20) is then within reach: nothing to pin.
        return []
    return ["--ulimit", f"{name}={limit.soft}:{limit.hard}"]


class Podman(Engine):
    name = "podman"
    install_hint = (
        "install Podman (Debian: sudo apt-get install podman uidmap slirp4netns "
        "fuse-overlayfs catatonit)"
    )

    def __init__(self, binary: str | None = None, host: PodmanHost | None = None) -> None:
        super().__init__(binary)
        self._host = host

    @property
    def host(self) -> PodmanHost:
        if self._host is None:
            self._host = detect_host()
        return self._host

    def mount_args(self, mount: Mount) -> list[str]:
        if mount.upper is None or mount.work is None:
            return ["--mount", bind_mount_arg(mount)]
        # A layer: Podman's overlay volume with hutch's own upper and work
        # directories (-v splits on ':', so no path here may hold one; the
        # caller passes a link without ':' for the lower layer).
        for path in (mount.source, mount.target, mount.upper, mount.work):
            if any(c in path for c in ":,"):
                raise SetupFailed(
                    f"{path!r} holds ':' or ',', which Podman's overlay volume (for .git) cannot carry",
                    'set [sandbox] workdir = "/workspace" so that the path inside has neither',
                )
        return ["-v", f"{mount.source}:{mount.target}:O,upperdir={mount.upper},workdir={mount.work}"]

    def run_argv(self, plan: RunPlan) -> list[str]:
        host = self.host
        argv = [self.binary, "run", "--rm", "--pull", "never", "--name", plan.name]
        if plan.interactive:
            argv.append("--interactive")
        if plan.tty:
            argv.append("--tty")
        for key, value in plan.labels:
            argv += ["--label", f"{key}={value}"]
        # Rootless: keep-id maps the host user to the same UID/GID inside, so
        # files it creates are the user's. Rootful: the host's own IDs, stated
        # explicitly so that containers.conf or PODMAN_USERNS cannot remap them.
        argv += ["--userns", "keep-id" if host.rootless else "host"]
        argv += [
            "--user",
            f"{plan.identity.uid}:{plan.identity.gid}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *(["--security-opt", f"seccomp={plan.seccomp}"] if plan.seccomp else []),
            "--init",
            # Podman copies the host's proxy variables (and with env_host in
            # containers.conf, all of them) into the container: only named
            # variables may enter.
            "--http-proxy=false",
            "--env-host=false",
            "--network",
            self.network_mode(plan.network),
            "--hostname",
            plan.hostname,
        ]
        if host.limits_work:
            argv += [
                "--memory",
                plan.memory,
                "--cpus",
                f"{plan.cpus:g}",
                "--pids-limit",
                str(plan.pids),
            ]
        # Rootful Podman raises RLIMIT_NPROC and RLIMIT_NOFILE to 2^20 unless
        # told, which fails ("error setting rlimit") where root lacks
        # CAP_SYS_RESOURCE, in a container or VM sandbox, say. Pinned here
        # instead: processes to the plan's number (the one limit that needs no
        # cgroup, so it also holds for rootless Podman on cgroup v1; counted per
        # user namespace since Linux 5.14), open files to what the user has.
        cap = self.process_cap(plan)
        argv += ["--ulimit", f"nproc={cap}:{cap}"]
        argv += _ulimit("nofile", host.nofile)
        argv += ["--workdir", plan.workdir]
        for mount in plan.mounts:
            argv += self.mount_args(mount)
        for var in plan.env:
            if not (var.name.isascii() and var.name.isidentifier()):
                # Podman expands NAME* against the host environment.
                raise SetupFailed(
                    f"environment variable name {var.name!r} is not valid",
                    "name variables with letters, digits and _ only",
                )
            if not var.secret:
                argv += ["--env", f"{var.name}={var.value}"]
        argv.append(plan.image)
        argv += plan.command
        return argv

    def process_cap(self, plan: RunPlan) -> int:
        """The plan's process limit, never above what the user may have."""
        hard = self.host.nproc.hard
        return plan.pids if hard == UNLIMITED else min(plan.pids, hard)

    def network_mode(self, network: str) -> str:
        if network == "none":
            return "none"
        if self.host.rootless:
            # Rootless Podman's user-mode network; the host's loopback stays
            # out of reach (also slirp4netns's default, stated here).
            return "slirp4netns:allow_host_loopback=false"
        return "bridge"

    def limits_gap(self, plan: RunPlan) -> LimitsGap | None:
        host = self.host
        if host.limits_work:
            return None
        cap = self.process_cap(plan)
        return LimitsGap(
            summary=f"limits: {cap} processes only (rootless Podman on cgroup v1)",
            warning=(
                "rootless Podman cannot set memory or CPU limits on this cgroup v1 host; "
                f"the sandbox runs without them (processes are capped at {cap} by RLIMIT_NPROC).\n"
                "  hint: boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use "
                "rootful Podman or Docker, to have them enforced"
            ),
        )

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
        # Docker image format: OCI images drop HEALTHCHECK and friends, and the
        # recipe is a Dockerfile that expects Docker semantics. Podman passes the
        # host's proxy variables to RUN steps itself (--http-proxy, default on),
        # from its environment, never from argv: only when the user asks.
        argv = [self.binary, "build", "--format", "docker", "--tag", tag]
        if not proxy:
            argv.append("--http-proxy=false")
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        if no_cache:
            argv.append("--no-cache")
        argv.append(context)
        return BuildCommand(tuple(argv), {}, False, () if proxy else PROXY_VARIABLES)

    def version(self) -> process.Result:
        # `podman version` has no server part unless it talks to a remote service.
        return self.call(["version", "--format", "{{.Client.Version}}"], timeout=20)

    def info(self, template: str) -> process.Result:
        return self.call(["info", "--format", template], timeout=60)

    def doctor_checks(self) -> list[Check]:
        try:
            version = self.version()
            info = self.info("json")
        except HutchError as err:
            return [Check("fail", err.message, err.hint or "", fatal=True)]
        if not version.ok or not info.ok:
            failed = version if not version.ok else info
            return [Check("fail", f"podman: {failed.stderr.strip()[-400:]}",
                          f"run `{self.binary} info` and fix what it says; {self.install_hint}",
                          fatal=True)]  # fmt: skip
        try:
            data = json.loads(info.stdout)
            host, store = data["host"], data["store"]
            rootless = bool(host["security"]["rootless"])
            driver = str(store["graphDriverName"])
            cgroups = str(host.get("cgroupVersion", ""))
            uidmap = host.get("idMappings", {}).get("uidmap") or []
            config_file = str(store.get("configFile", ""))
        except (ValueError, KeyError, TypeError) as err:
            return [Check("fail", f"cannot read `{self.binary} info`: {err}", "upgrade Podman to 4.x",
                          fatal=True)]  # fmt: skip
        mode = "rootless" if rootless else "rootful"
        checks = [Check("ok", f"podman {version.stdout.strip()} works, {mode} (no daemon needed)")]

        def check(ok: bool, what: str, fix: str = "") -> None:
            checks.append(Check("ok" if ok else "fail", what, fix))

        if rootless != self.host.rootless:
            check(False, f"podman reports {mode}, but hutch assumed the opposite from your user ID",
                  "unset CONTAINER_HOST: hutch runs local Podman")  # fmt: skip
        if rootless:
            check(len(uidmap) > 1, f"subordinate ID ranges for uid {os.getuid()} (keep-id maps you "
                  "to the same uid inside)", SUBID_FIX)  # fmt: skip
            check(shutil.which("slirp4netns") is not None,
                  "slirp4netns present (network for --network open)",
                  "sudo apt-get install slirp4netns")  # fmt: skip
            check(os.access(TUN_DEVICE, os.R_OK | os.W_OK),
                  f"{TUN_DEVICE} usable (slirp4netns: image builds and --network open)",
                  f"sudo modprobe tun; sudo chmod 0666 {TUN_DEVICE} (its usual mode)")  # fmt: skip
        if driver == "vfs":
            checks.append(_vfs_check(self.binary, rootless=rootless, config_file=config_file,
                                      info_stderr=info.stderr))
        else:
            check(True, f"storage driver {driver}")
        if rootless and cgroups == "v1":
            checks.append(Check(
                "warn",
                "cgroup v1: rootless Podman cannot enforce memory or CPU limits; hutch runs "
                "sandboxes without them and caps processes with RLIMIT_NPROC instead",
                "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use rootful "
                "Podman or Docker, to have the limits enforced",
            ))  # fmt: skip
        elif cgroups:
            check(True, f"cgroup {cgroups}: memory, CPU and process limits enforced")
        init = self.host.init
        check(init is not None,
              f"init for PID 1 present ({init})" if init else
              f"init for PID 1 (catatonit) not found in {', '.join(CATATONIT_PATHS)} nor set as "
              "init_path in containers.conf: every sandbox would fail to start", INIT_FIX)  # fmt: skip
        checks.append(Check(*seccomp.doctor_check()))
        checks.append(Check(*layers.doctor_check()))
        return checks

    def check_ready(self) -> None:
        if self.host.init is None:
            raise EngineUnavailable(
                "Podman has no init (catatonit) to run as PID 1 of the sandbox", INIT_FIX
            )

    def raise_if_unavailable(self, stderr: str) -> None:
        text = stderr.lower()
        if "newuidmap" in text and ("not found" in text or "no such file" in text):
            raise EngineUnavailable(
                "rootless Podman needs newuidmap and newgidmap",
                "install them: sudo apt-get install uidmap",
            )
        if (
            "no subuid ranges found" in text
            or "no subgid ranges found" in text
            or "cannot find mappings for user" in text
            or "insufficient uids or gids" in text
        ):
            raise EngineUnavailable("your user has no subordinate UID/GID ranges for Podman", SUBID_FIX)
        if "container-init binary not found" in text:
            raise EngineUnavailable(
                "Podman has no init (catatonit) to run as PID 1 of the sandbox", INIT_FIX
            )
        if "cannot clone: operation not permitted" in text or "cannot re-exec process" in text:
            raise EngineUnavailable(
                "rootless Podman cannot create a user namespace here",
                "allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000; "
                "on Debian kernels < 5.10 also kernel.unprivileged_userns_clone=1)",
            )
        if "slirp4netns" in text and ("sync pipe" in text or "/dev/net/tun" in text):
            raise EngineUnavailable(
                "rootless Podman's network (slirp4netns) cannot start",
                "it needs /dev/net/tun: sudo modprobe tun; sudo chmod 0666 /dev/net/tun "
                "(its usual mode); `hutch doctor` checks this",
            )
        if "unable to connect to podman" in text or "cannot connect to podman" in text:
            raise EngineUnavailable(
                "the Podman service is not reachable",
                "unset CONTAINER_HOST to use local Podman, or start the service: "
                "systemctl --user start podman.socket",
            )


def _vfs_check(binary: str, *, rootless: bool, config_file: str, info_stderr: str) -> Check:
    overridden = "overwritten by graph driver" in info_stderr
    conf = config_file or (
        "~/.config/containers/storage.conf" if rootless else "/etc/containers/storage.conf")
    if conf.startswith("/usr/share/"):
        conf = "/etc/containers/storage.conf"  # the packaged default: override it in /etc
    fix = (
        f'write {conf} with the lines [storage] and driver = "overlay"; then '
        f"`{binary} system reset` "
        "(it deletes this user's Podman images and containers) so that the new driver "
        "takes effect, and `hutch build` again"
    )
    if overridden:
        fix = (f"{conf} already asks for overlay, but the storage was created with vfs: "
               f"`{binary} system reset` (deletes this user's Podman images and "
               "containers), then `hutch build`")  # fmt: skip
    return Check("warn", "storage driver vfs: every launch copies the whole image (seconds, not "
                 "a fraction of one)", fix)  # fmt: skip
