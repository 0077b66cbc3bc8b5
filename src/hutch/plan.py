"""Turn settings into a frozen description of one sandbox. Pure: no I/O here."""

from __future__ import annotations

import os
import posixpath
from hashlib import sha256
from typing import TYPE_CHECKING, NamedTuple

from hutch.agents import AgentDef
from hutch.config import Settings
from hutch.errors import SetupFailed, UsageError
from hutch.image.recipe import HOME

if TYPE_CHECKING:
    from collections.abc import Mapping

PROXY_PORT = 3128
RUNTIME_DIR = "/run/hutch"
PROXY_SOCKET = f"{RUNTIME_DIR}/egress/egress.sock"
# Named values travel in this file, read by the entrypoint, so that they are
# neither in argv nor in the engine's container metadata.
ENV_FILE = f"{RUNTIME_DIR}/env"
GATE_SOCKET = f"{RUNTIME_DIR}/gate.sock"
# Targets a user mount may not cover: they would hide or replace what the
# sandbox's guarantees rest on.
RESERVED_TARGETS = ("/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/run/hutch")
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")


class Mount(NamedTuple):
    source: str
    target: str
    readonly: bool = False
    # A copy-on-write layer (hutch.layers): ``source`` is the lower layer,
    # seen read-only, and writes land in ``upper``; ``work`` is the overlay's
    # scratch directory on the same file system.
    upper: str | None = None
    work: str | None = None


class EnvVar(NamedTuple):
    name: str
    value: str
    # Secret values never appear in argv, --dry-run, logs or engine metadata:
    # they reach the sandbox through the session's env file.
    secret: bool = False


class Identity(NamedTuple):
    uid: int
    gid: int
    name: str


class RunPlan(NamedTuple):
    image: str
    name: str
    session: str
    labels: tuple[tuple[str, str], ...]
    identity: Identity
    workdir: str
    mounts: tuple[Mount, ...]
    env: tuple[EnvVar, ...]
    network: str  # engine network mode: "none" or "bridge"
    egress: str  # "allowlist" | "open" | "none"
    memory: str
    cpus: float
    pids: int
    interactive: bool
    tty: bool
    command: tuple[str, ...]
    hostname: str = "hutch"
    notes: tuple[str, ...] = ()
    # hutch's narrowed seccomp profile (hutch.engines.seccomp); None: the engine's default
    seccomp: str | None = None


class HostFacts(NamedTuple):
    """What planning needs to know about the host, gathered by the caller."""

    project: str
    cwd: str
    home: str
    identity: Identity
    environ: Mapping[str, str]
    agent_home: str
    cache_root: str
    identity_files: tuple[str, str]  # generated passwd and group on the host
    owner_pid: int = 0
    hostname: str = ""
    runtime_dir: str | None = None  # host side of /run/hutch for this session
    empty_file: str = ""
    empty_dir: str = ""


class Layer(NamedTuple):
    """A copy-on-write layer over a project path (hutch.layers): the engine
    reaches the host directory through ``lower``."""

    rel: str
    lower: str
    upper: str
    work: str


class Masking(NamedTuple):
    """How the project looks inside beyond its own mount, as hutch.guard
    decided it: paths relative to the project root."""

    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    layers: tuple[Layer, ...] = ()


NO_MASKING = Masking()


def project_key(project: str) -> str:
    return sha256(os.fsencode(project)).hexdigest()[:12]


def passwd_entries(identity: Identity) -> tuple[str, str]:
    """/etc/passwd and /etc/group for the sandbox: the host user resolves by its IDs."""
    users = [f"{identity.name}:x:{identity.uid}:{identity.gid}:hutch sandbox user:{HOME}:/bin/bash"]
    groups = [f"{identity.name}:x:{identity.gid}:"]
    if identity.uid != 0:
        users.insert(0, "root:x:0:0:root:/root:/usr/sbin/nologin")
    if identity.gid != 0:
        groups.insert(0, "root:x:0:")
    if identity.uid != 65534:
        users.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    if identity.gid != 65534:
        groups.append("nogroup:x:65534:")
    return "\n".join(users) + "\n", "\n".join(groups) + "\n"


def sandbox_user_name(host_name: str, uid: int) -> str:
    if uid == 0:
        return "root"
    ok = host_name and host_name[0].isalpha() and all(c.isalnum() or c in "-_." for c in host_name)
    if not ok or host_name in ("root", "nobody", "nogroup"):
        return "hutch"
    return host_name


def parse_mount(spec: str, project: str, home: str) -> Mount:
    """SRC:DST[:ro|rw]; SRC may hold ':' (DST is the part after the last ':/')."""
    readonly = False
    body = spec
    if body.endswith((":ro", ":rw")):
        readonly = body.endswith(":ro")
        body = body[:-3]
    cut = body.rfind(":/")
    if cut <= 0:
        raise UsageError(
            f"mount {spec!r} is not SRC:DST[:ro|rw]",
            'write it as "~/data:/data:ro" (the target must be an absolute path)',
        )
    source, target = body[:cut], body[cut + 1 :]
    if source.startswith("~"):
        source = home + source[1:]
    elif not source.startswith("/"):
        source = posixpath.join(project, source)
    target = posixpath.normpath(target)
    if "\n" in target or target == "/" or any(
        target == r or target.startswith(r + "/") for r in RESERVED_TARGETS
    ):
        raise UsageError(f"mount {spec!r}: {target} cannot be a mount target in the sandbox")
    return Mount(posixpath.normpath(source), target, readonly)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def container_name(project: str, session: str) -> str:
    """hutch-SLUG-SESSION, where SLUG is the project directory's name in what
    every engine accepts in a name ([a-z0-9-], ASCII only: str.isalnum says yes
    to letters of every script), at most 24 characters."""
    base = posixpath.basename(project) or "root"
    words = "".join(c if c.isascii() and c.isalnum() else " " for c in base.lower()).split()
    slug = "-".join(words)[:24].strip("-") or "project"
    return f"hutch-{slug}-{session}"


def project_target(settings: Settings, project: str) -> str:
    return project if settings.workdir == "host" else settings.workdir


def env_vars(settings: Settings, agent: AgentDef, environ: Mapping[str, str]) -> tuple[
    tuple[EnvVar, ...], tuple[str, ...]
]:
    """Named host variables only; returns the variables and notes on missing ones."""
    result: dict[str, EnvVar] = {}
    notes: list[str] = []
    for entry in settings.env:
        name, sep, value = entry.partition("=")
        if sep:
            result[name] = EnvVar(name, value, secret=True)
        elif name in environ:
            result[name] = EnvVar(name, environ[name], secret=True)
        else:
            notes.append(f"{name} is not set on the host; not passed")
    for name, value in agent.fixed_env:
        result.setdefault(name, EnvVar(name, value))
    return tuple(result.values()), tuple(notes)


def build_run_plan(
    settings: Settings,
    agent: AgentDef,
    host: HostFacts,
    *,
    image: str,
    session: str,
    command: tuple[str, ...],
    interactive: bool,
    tty: bool,
    masking: Masking = NO_MASKING,
) -> RunPlan:
    project = host.project
    if not project.isascii():
        try:
            project.encode()
        except UnicodeEncodeError:
            # The engines' clients pass paths on as UTF-8 text: such a name would
            # reach them changed, and mount nothing or something else.
            raise SetupFailed(
                f"the project path {project!r} is not valid UTF-8: container engines cannot mount it",
                "rename the directory (convmv converts a name's encoding)",
            ) from None
    target = project_target(settings, project)
    rel = posixpath.relpath(host.cwd, project) if _inside(host.cwd, project) else "."
    workdir = posixpath.normpath(posixpath.join(target, rel))

    mounts: list[Mount] = [Mount(project, target)]
    for layer in masking.layers:
        mounts.append(Mount(layer.lower, posixpath.join(target, layer.rel), False, layer.upper, layer.work))
    for rel_path in masking.readonly:
        mounts.append(Mount(posixpath.join(project, rel_path), posixpath.join(target, rel_path), True))
    for rel_path in masking.files:
        mounts.append(Mount(host.empty_file, posixpath.join(target, rel_path), True))
    for rel_path in masking.dirs:
        mounts.append(Mount(host.empty_dir, posixpath.join(target, rel_path), True))
    mounts.append(Mount(host.agent_home, HOME))
    if settings.auth == "host":
        for rel_path in agent.home_paths:
            mounts.append(
                Mount(posixpath.join(host.home, rel_path), posixpath.join(HOME, rel_path))
            )
    key = project_key(project)
    cache_targets = {"npm": ".npm", "pip": ".cache/pip"}
    for kind in settings.caches:
        mounts.append(
            Mount(
                posixpath.join(host.cache_root, key, kind),
                posixpath.join(HOME, cache_targets[kind]),
            )
        )
    passwd, group = host.identity_files
    mounts.append(Mount(passwd, "/etc/passwd", True))
    mounts.append(Mount(group, "/etc/group", True))
    for spec in settings.mounts:
        mount = parse_mount(spec, project, host.home)
        if mount.source in ENGINE_SOCKETS:
            raise UsageError(f"mount {spec!r} would hand the sandbox the engine socket; refused")
        mounts.append(mount)

    env, notes = env_vars(settings, agent, host.environ)
    fixed = [
        EnvVar("HOME", HOME),
        EnvVar("USER", host.identity.name),
        EnvVar("LOGNAME", host.identity.name),
        EnvVar("SHELL", "/bin/bash"),
        EnvVar("HUTCH_SESSION", session),
    ]
    if tty:
        fixed.append(EnvVar("TERM", host.environ.get("TERM", "xterm-256color")))
    if host.runtime_dir is not None:
        # The entrypoint waits here until hutch has checked the mounts (hutch.gate).
        fixed.append(EnvVar("HUTCH_GATE", GATE_SOCKET))
        mounts.append(Mount(host.runtime_dir, RUNTIME_DIR))
    if settings.network_mode == "allowlist" and host.runtime_dir is not None:
        proxy_url = f"http://127.0.0.1:{PROXY_PORT}"
        fixed.append(EnvVar("HUTCH_PROXY_SOCKET", PROXY_SOCKET))
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            fixed.append(EnvVar(name, proxy_url))
        for name in ("NO_PROXY", "no_proxy"):
            fixed.append(EnvVar(name, "localhost,127.0.0.1,::1"))
    if any(e.secret for e in env):
        fixed.append(EnvVar("HUTCH_ENV_FILE", ENV_FILE))
    named = {e.name for e in env}
    all_env = tuple(e for e in fixed if e.name not in named) + env

    labels = (
        ("io.hutch.managed", "true"),
        ("io.hutch.session", session),
        ("io.hutch.project", project),
        ("io.hutch.agent", agent.name),
        ("io.hutch.pid", str(host.owner_pid)),
        ("io.hutch.host", host.hostname),
    )
    return RunPlan(
        image=image,
        name=container_name(project, session),
        session=session,
        labels=labels,
        identity=host.identity,
        workdir=workdir,
        mounts=tuple(mounts),
        env=all_env,
        network="bridge" if settings.network_mode == "open" else "none",
        egress=settings.network_mode,
        memory=settings.memory,
        cpus=settings.cpus,
        pids=settings.pids,
        interactive=interactive,
        tty=tty,
        command=command,
        notes=notes,
    )
