"""The core of run, exec and shell: resolve, build if needed, launch, clean up."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from hutch import process
from hutch.agents import AgentDef
from hutch.agents import resolve as resolve_agent
from hutch.config import Settings
from hutch.engines.base import Engine, host_name
from hutch.errors import ConfigError, SetupFailed, UsageError
from hutch.image.recipe import Recipe, render
from hutch.image.versions import Pins
from hutch.paths import (
    CONFIG_NAME,
    Dirs,
    ancestors,
    home,
    read_bytes,
    read_text,
    replace_text,
    touch,
    touch_in,
)
from hutch.plan import (
    HostFacts,
    Identity,
    Masking,
    RunPlan,
    passwd_entries,
    project_key,
    sandbox_user_name,
)

if TYPE_CHECKING:
    from hutch.egress.session import SessionEgress

HOST_CA_DIR = "/usr/local/share/ca-certificates"


class Workspace(NamedTuple):
    dirs: Dirs
    project: str
    cwd: str
    settings: Settings
    engine: Engine
    quiet: bool = False

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"hutch: {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        # Security-relevant news is printed even with -q.
        print(f"hutch: warning: {message}", file=sys.stderr, flush=True)

    def agent(self, name: str | None) -> AgentDef:
        return resolve_agent(name or self.settings.agent, self.settings.custom_agents)

    @property
    def pins(self) -> Pins:
        return Pins(os.path.join(self.dirs.state, "versions.json"))


# -- images ---------------------------------------------------------------------


def _ca_paths(ws: Workspace) -> list[str]:
    setting = ws.settings.ca_certificates
    if setting == "none":
        return []
    if setting == "host":
        # Every *.crt below it, in path order; links to directories are not followed.
        found = [
            os.path.join(root, name)
            for root, _, names in os.walk(HOST_CA_DIR)
            for name in names
            if name.endswith(".crt") and os.path.isfile(os.path.join(root, name))
        ]
        return sorted(found, key=lambda path: path.split("/"))
    assert isinstance(setting, tuple)
    return [os.path.expanduser(p) if p.startswith("~") else os.path.join(ws.project, p) for p in setting]


def ca_files(ws: Workspace) -> tuple[tuple[str, bytes], ...]:
    found: list[tuple[str, bytes]] = []
    for path in _ca_paths(ws):
        try:
            content = read_bytes(path)
        except OSError as err:
            raise ConfigError(
                f"[image] ca_certificates: cannot read {path}: {err.strerror}",
                "name PEM files that exist, relative to the project root",
            ) from err
        if b"-----BEGIN CERTIFICATE-----" not in content:
            raise ConfigError(f"[image] ca_certificates: {path} holds no PEM certificate")
        found.append((os.path.basename(path), content))
    return tuple(found)


def agent_version(ws: Workspace, agent: AgentDef, refresh: bool = False) -> str:
    if agent.pinned_version:
        return agent.pinned_version
    pin = ws.pins.get(agent.name)
    if pin is not None and not refresh:
        return pin.version
    from hutch.image.versions import LookupFailed, latest_version

    try:
        version = latest_version(agent)
    except LookupFailed as err:
        if pin is not None:
            ws.say(f"could not ask the registry for {agent.package} ({err}); keeping {pin.version}")
            return pin.version
        ws.say(f"could not ask the registry for {agent.package} ({err}); installing its latest")
        return "latest"
    ws.pins.set(agent.name, version)
    return version


def recipe_inputs(ws: Workspace, project_from_flag: bool) -> list[tuple[str, str]]:
    """Every path whose state decides this workspace's recipe tag, for hutch.stamp:
    (path, "file") when its content counts, (path, "exists") when its presence does."""
    from hutch.engines import docker_config_file

    watched = [(ws.dirs.user_config, "file"), (os.path.join(ws.dirs.state, "versions.json"), "file"),
               (docker_config_file(), "file")]  # fmt: skip
    if project_from_flag:
        watched.append((os.path.join(ws.project, CONFIG_NAME), "file"))
    else:  # the project-root search (hutch.paths.find_project_root), the project's file among them
        for directory in ancestors(os.path.realpath(ws.cwd)):
            watched += [(os.path.join(directory, CONFIG_NAME), "file"),
                        (os.path.join(directory, ".git"), "exists")]  # fmt: skip
    if ws.settings.ca_certificates == "host":  # a certificate added or removed changes a directory
        watched += [(root, "file") for root, _, _ in os.walk(HOST_CA_DIR)]
    watched += [(path, "file") for path in _ca_paths(ws)]
    code = os.path.dirname(__file__)
    for name in ("image/recipe.py", "image/entrypoint.sh", "agents/__init__.py", "config/schema.py"):
        watched.append((os.path.join(code, name), "file"))
    return watched


def recipe_for(ws: Workspace, agent: AgentDef, refresh: bool = False) -> Recipe:
    s = ws.settings
    return render(
        agent,
        agent_version(ws, agent, refresh),
        s.base,
        s.packages,
        s.npm,
        s.pip,
        ca_files(ws),
    )


def _marker(ws: Workspace, recipe: Recipe) -> str:
    # Per engine: an image built by Docker is not in Podman's storage.
    return os.path.join(ws.dirs.state, "images", ws.engine.name, recipe.digest)


def ensure_image(
    ws: Workspace, recipe: Recipe, force: bool = False, no_cache: bool = False, ask: bool = False
) -> bool:
    """Make sure recipe.tag exists; returns True when a build ran.

    A launch trusts the marker of an earlier build (a launch that finds the
    image gone rebuilds, see launch); with ask, the engine is asked every time.
    """
    marker = _marker(ws, recipe)
    if not force and not no_cache:
        if os.path.exists(marker) and not ask:
            return False
        if ws.engine.image_id(recipe.tag):
            touch_in(marker)
            return False
    from hutch.image.build import build

    build(ws.engine, recipe, os.path.join(ws.dirs.state, "builds"), no_cache=no_cache, quiet=ws.quiet)
    touch_in(marker)
    return True


def forget_image(ws: Workspace, recipe: Recipe) -> None:
    _unlink(_marker(ws, recipe))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the host side of a sandbox ---------------------------------------------------


def check_mount_sources(ws: Workspace) -> None:
    """Refuse user mounts whose source inside the project passes through a symlink.

    The sandbox writes the project, so a link there may have been planted by an
    earlier session (`data -> ~/.ssh`): following it would widen the mount.
    """
    from hutch.plan import parse_mount

    project = ws.project
    for spec in ws.settings.mounts:
        source = parse_mount(spec, project, home()).source
        if not (source == project or source.startswith(project.rstrip("/") + "/")):
            continue
        current = project
        for part in [p for p in os.path.relpath(source, project).split("/") if p not in ("", ".")]:
            current = os.path.join(current, part)
            if os.path.islink(current):
                raise SetupFailed(
                    f"mount {spec!r}: {current} is a symlink inside the project; refused, "
                    "as a sandbox could have planted it",
                    "mount the real directory by its own path, outside the project",
                )


def check_project(ws: Workspace, force: bool) -> None:
    home_dir = os.path.realpath(home())
    project = ws.project
    if force:
        return
    if project == "/":
        raise UsageError(
            "refusing to use / as the project: the sandbox would see the whole machine",
            "run hutch inside a project directory, or pass --force if you really mean it",
        )
    if project == home_dir:
        raise UsageError(
            f"refusing to use your home directory {home_dir} as the project: it holds your keys",
            "run hutch inside a project directory, or pass --force if you really mean it",
        )


def host_identity() -> Identity:
    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = ""
    return Identity(uid, gid, sandbox_user_name(name, uid))


def _write_if_changed(path: str, content: str) -> None:
    try:
        if read_text(path) == content:
            return
    except (OSError, ValueError):
        pass
    replace_text(path, content, mode=0o644)


def host_facts(ws: Workspace, agent: AgentDef, runtime_dir: str | None = None) -> HostFacts:
    identity = host_identity()
    data = ws.dirs.data
    agent_home = ws.dirs.agent_home(agent.name)
    os.makedirs(agent_home, mode=0o700, exist_ok=True)
    ident_dir = os.path.join(data, "identity")
    passwd, group = passwd_entries(identity)
    key = f"{identity.uid}-{identity.gid}-{identity.name}"
    identity_files = (os.path.join(ident_dir, f"passwd-{key}"), os.path.join(ident_dir, f"group-{key}"))
    _write_if_changed(identity_files[0], passwd)
    _write_if_changed(identity_files[1], group)
    empty_file = os.path.join(data, "empty", "file")
    empty_dir = os.path.join(data, "empty", "dir")
    if not os.path.exists(empty_file):
        os.makedirs(empty_dir, exist_ok=True)
        touch(empty_file, mode=0o444)
    cache_root = os.path.join(data, "caches")
    if ws.settings.auth == "host":
        _prepare_host_auth(ws, agent)
    for kind in ws.settings.caches:
        os.makedirs(os.path.join(cache_root, project_key(ws.project), kind), exist_ok=True)
    return HostFacts(
        project=ws.project,
        cwd=os.path.realpath(ws.cwd),
        home=home(),
        identity=identity,
        environ=dict(os.environ),
        agent_home=agent_home,
        cache_root=cache_root,
        identity_files=identity_files,
        owner_pid=os.getpid(),
        hostname=host_name(),
        runtime_dir=runtime_dir,
        empty_file=empty_file,
        empty_dir=empty_dir,
    )


def _prepare_host_auth(ws: Workspace, agent: AgentDef) -> None:
    """auth = "host": the seed's behaviour. Create what is missing, never touch what exists."""
    for rel in agent.home_paths:
        path = os.path.join(home(), rel)
        if os.path.exists(path):
            continue
        if "." in os.path.basename(rel.rstrip("/")).lstrip("."):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write("{}\n" if rel.endswith(".json") else "")
        else:
            os.makedirs(path, exist_ok=True)
        ws.say(f"created {path} for auth = \"host\"")


# -- sessions -------------------------------------------------------------------


def new_session_id() -> str:
    return os.urandom(4).hex()


def describe(plan: RunPlan, masking: Masking, allow_count: int) -> str:
    project = plan.mounts[0]
    network = {
        "allowlist": f"allowlist ({allow_count} hosts)",
        "open": "open",
        "none": "none",
    }[plan.egress]
    parts = [f"session {plan.session}", f"project {project.source} -> {project.target}"]
    parts.append(f"network {network}")
    masked = len(masking.files) + len(masking.dirs)
    parts.append(f"{masked} secret file{'s' if masked != 1 else ''} masked")
    return " | ".join(parts)


def runtime_base() -> str:
    # Unix socket paths are limited to ~107 bytes: keep the directory short.
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if not base or len(base) > 60 or not os.path.isdir(base):
        base = os.environ.get("TMPDIR", "") or "/tmp"
        if len(base) > 60 or not os.path.isdir(base):
            base = "/tmp"
    return base


def make_runtime_dir(session: str) -> str:
    """The host side of /run/hutch: the proxy socket and the env file. Private (0700)."""
    path = os.path.join(runtime_base(), f"hutch-{os.getuid()}-{session}")
    os.mkdir(path, mode=0o700)
    return path


def write_env_file(runtime_dir: str, plan: RunPlan) -> None:
    """Named values, shell-quoted, for the entrypoint to read (not argv, not metadata)."""
    lines = [f"{v.name}={shlex.quote(v.value)}" for v in plan.env if v.secret]
    if not lines:
        return
    path = os.path.join(runtime_dir, "env")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def sweep_runtime_dirs(ws: Workspace) -> list[str]:
    """Runtime dirs of this user's sessions that no live hutch owns any more."""
    live = {name[: -len(".json")] for name in _session_files(ws)}
    prefix = f"hutch-{os.getuid()}-"
    removed: list[str] = []
    base = runtime_base()
    for entry in os.scandir(base):
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False):
            if entry.name[len(prefix) :] not in live:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    return removed


def _session_files(ws: Workspace) -> list[str]:
    """The names of the session records (SESSION.json) in the sessions directory."""
    try:
        names = os.listdir(ws.dirs.sessions())
    except OSError:
        return []
    return [name for name in names if name.endswith(".json")]


def _record_path(ws: Workspace, session: str) -> str:
    return os.path.join(ws.dirs.sessions(), f"{session}.json")


def record_session(ws: Workspace, plan: RunPlan, runtime_dir: str | None) -> str:
    path = _record_path(ws, plan.session)
    record = {
        "session": plan.session,
        "container": plan.name,
        "project": ws.project,
        "agent": dict(plan.labels).get("io.hutch.agent", ""),
        "pid": os.getpid(),
        "host": host_name(),
        "started": time.time(),
        "engine": ws.engine.name,
        "runtime_dir": runtime_dir,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record))
    return path


def stale_records(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    """Session records whose hutch process is gone: their sandboxes may be left behind."""
    found: list[tuple[str, dict[str, object]]] = []
    for name in _session_files(ws):
        path = os.path.join(ws.dirs.sessions(), name)
        try:
            data = json.loads(read_text(path))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):  # unreadable or not a record: nothing to reap
            _unlink(path)
            continue
        pid = data.get("pid")
        if data.get("host") == host_name() and isinstance(pid, int) and not process.is_alive(pid):
            found.append((path, data))
    return found


def reap_stale(ws: Workspace) -> list[str]:
    """Remove sandboxes whose hutch died (killed, crashed); cheap when there are none."""
    stale = stale_records(ws)
    names = [str(d.get("container")) for _, d in stale if d.get("engine") == ws.engine.name]
    if names:
        ws.engine.remove(names)
    for path, data in stale:
        runtime = data.get("runtime_dir")
        if isinstance(runtime, str) and os.path.basename(runtime).startswith(f"hutch-{os.getuid()}-"):
            shutil.rmtree(runtime, ignore_errors=True)
        _unlink(path)
    return names


def launch(
    ws: Workspace,
    plan: RunPlan,
    recipe: Recipe,
    runtime_dir: str | None = None,
    egress: SessionEgress | None = None,
) -> int:
    """Start the sandbox in the foreground and pass its exit status through."""
    engine = ws.engine
    own_group = not plan.tty
    env = engine.client_env(plan, os.environ)
    cleaned: list[bool] = []
    records: list[str] = []

    def cleanup(_signum: int) -> None:
        if not cleaned:
            cleaned.append(True)
            engine.remove([plan.name])

    def started() -> None:
        # This runs while the engine creates the container, off the launch's
        # critical path. The proxy first: the entrypoint waits for its socket.
        if egress is not None:
            egress.start()
        if not records:
            reap_stale(ws)
            records.append(record_session(ws, plan, runtime_dir))

    try:
        status, signum = process.foreground(
            engine.run_argv(plan), env, own_group, cleanup, on_started=started
        )
        if status == 125 and signum is None and not engine.image_id(plan.image):
            # The image went away behind hutch's back (pruned): build it and retry once.
            forget_image(ws, recipe)
            ensure_image(ws, recipe)
            if egress is not None:
                egress.finish()
            status, signum = process.foreground(
                engine.run_argv(plan), env, own_group, cleanup, on_started=started
            )
    except FileNotFoundError as err:
        raise SetupFailed(
            f"{engine.binary} is not installed (not found on PATH)", engine.install_hint
        ) from err
    finally:
        for record in records:
            _unlink(record)
    return status
