"""build, update, agents, doctor, ps, stop, gc, audit and config."""

from __future__ import annotations

import grp
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hutch import session
from hutch.agents import AgentDef, all_agents
from hutch.errors import EXIT_ENGINE, ConfigError, HutchError, UsageError
from hutch.image.versions import LookupFailed, latest_version
from hutch.paths import CONFIG_NAME
from hutch.session import Workspace

if TYPE_CHECKING:
    from hutch.engines.podman import Podman


def build(
    ws: Workspace, agent_name: str | None, no_cache: bool, stamp_file: str, project_from_flag: bool
) -> int:
    agent = ws.agent(agent_name)
    recipe = session.recipe_for(ws, agent)
    built = session.ensure_image(ws, recipe, no_cache=no_cache, ask=True)
    up_to_date = f"{recipe.tag} is up to date ({agent.name} {recipe.agent_version})"
    if not built:
        ws.say(up_to_date)
    print(recipe.tag)
    if ws.engine.name == "docker":
        from hutch import stamp
        from hutch.engines import docker_socket

        socket = docker_socket()
        if socket is not None:
            message = "" if ws.quiet else up_to_date
            inputs = session.recipe_inputs(ws, project_from_flag)
            stamp.write(stamp_file, socket, recipe.tag, message, inputs)
    return 0


def update(ws: Workspace, agent_name: str | None, every: bool) -> int:
    from hutch.errors import BuildFailed

    if every and agent_name:
        raise UsageError("give an agent or --all, not both", "`hutch update claude` or `hutch update --all`")
    known = all_agents(ws.settings.custom_agents)
    if every:
        names = [name for name in known if ws.pins.get(name) is not None]
        if not names:
            ws.say("no agent has been built yet; nothing to update (`hutch build AGENT` builds one)")
            return 0
    else:
        names = [ws.agent(agent_name).name]
    unanswered: list[str] = []
    failed: list[BuildFailed] = []
    for name in names:
        agent = known[name]
        if agent.pinned_version is not None:
            ws.say(f"{name} is pinned to {agent.pinned_version} by [agents.{name}] version; "
                   "change it there to move it")  # fmt: skip
            continue
        before = ws.pins.get(name)
        try:
            newest = latest_version(agent)
        except LookupFailed as err:
            kept = f"; keeping {before.version}" if before is not None else ""
            ws.warn(f"could not ask the registry for {agent.package} ({err}){kept}")
            unanswered.append(name)
            continue
        # Build first, pin after: a failed build leaves the working image in use.
        recipe = session.recipe_for(ws, agent._replace(pinned_version=newest))
        if before is None:
            ws.say(f"{name}: newest release {newest}")
        elif before.version == newest:
            ws.say(f"{name} {newest} is the newest release")
        else:
            ws.say(f"{name}: {before.version} -> {newest}")
        try:
            built = session.ensure_image(ws, recipe)
        except BuildFailed as err:
            if len(names) == 1:
                raise
            print(f"hutch: {err}", file=sys.stderr)
            failed.append(err)
            continue
        ws.pins.set(name, newest)
        if not built:
            ws.say(f"{recipe.tag} is up to date")
        print(recipe.tag)
    if failed:
        raise BuildFailed(
            f"{len(failed)} of {len(names)} image builds failed (see above)",
            "fix the cause and run `hutch update --all` again; the failed agents keep their images",
        )
    if unanswered:
        raise HutchError(
            f"could not look up the newest release of {', '.join(unanswered)}",
            "check the network or npm_config_registry, then run `hutch update` again",
        )
    return 0


def _newest(agent: AgentDef) -> str | None:
    try:
        return latest_version(agent, timeout=8)
    except LookupFailed:
        return None


def agents(ws: Workspace) -> int:
    from hutch.errors import EngineUnavailable

    known = all_agents(ws.settings.custom_agents)
    # All registries at once: one slow answer bounds the wait, not the sum.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(known)) as pool:
        newest = dict(zip(known, pool.map(_newest, known.values()), strict=True))
    now = time.time()
    engine_error: EngineUnavailable | None = None
    behind: list[str] = []
    rows: list[tuple[str, ...]] = [("AGENT", "PACKAGE", "PINNED", "NEWEST", "IMAGE")]
    for name, agent in known.items():
        pin = ws.pins.get(name)
        latest = newest[name]
        if pin is not None and latest is not None and agent.pinned_version is None:
            # What `hutch run` says about updates comes from here too.
            try:
                ws.pins.seen(name, latest, now)
            except OSError:
                pass  # a read-only state directory only costs the run notice its news
            if latest != pin.version:
                behind.append(name)
        version = agent.pinned_version or (pin.version if pin is not None else None)
        image = "not built"
        if version is not None:
            if engine_error is None:
                recipe = session.recipe_for(ws, agent)  # the pin's version: no lookup
                try:
                    image = recipe.tag if ws.engine.image_id(recipe.tag) else "not built"
                except EngineUnavailable as err:
                    engine_error = err
            if engine_error is not None:
                image = "?"
        marker = "" if agent.builtin else " (config)"
        rows.append((name + marker, f"{agent.install}:{agent.package}", version or "-",
                     latest or "?", image))  # fmt: skip
    _table(rows)
    sys.stdout.flush()  # the table before the notes below, also when piped
    if any(latest is None for latest in newest.values()):
        ws.say("NEWEST ? : the registry did not answer; check the network or npm_config_registry")
    if engine_error is not None:
        ws.warn(f"image state unknown: {engine_error}")
    if behind:
        which = behind[0] if len(behind) == 1 else "--all"
        ws.say(f"newer releases for {', '.join(behind)}: `hutch update {which}` rebuilds")
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def ps(ws: Workspace) -> int:
    rows: list[tuple[str, ...]] = [("SESSION", "AGENT", "STATE", "PROJECT", "CONTAINER")]
    for c in ws.engine.containers():
        rows.append((c.session, c.labels.get("io.hutch.agent", ""), c.state,
                     c.labels.get("io.hutch.project", ""), c.name))  # fmt: skip
    _table(rows)
    return 0


def stop(ws: Workspace, session_id: str) -> int:
    matches = [
        c for c in ws.engine.containers() if session_id in (c.session, c.name, c.id)
    ]
    if not matches:
        raise HutchError(f"no session {session_id!r}", "`hutch ps` lists the running sessions")
    ws.engine.remove([c.name for c in matches])
    ws.say(f"stopped session {session_id}")
    return 0


def gc(ws: Workspace) -> int:
    from hutch.engines.base import host_name, owner_pid_alive

    reaped = session.reap_stale(ws)
    hostname = host_name()
    leftovers = [
        c.name
        for c in ws.engine.containers()
        if c.name not in reaped and not owner_pid_alive(c.labels, hostname)
    ]
    ws.engine.remove(leftovers)
    swept = session.sweep_runtime_dirs(ws)
    removed = reaped + leftovers + swept
    ws.say(f"removed {len(removed)} leftover sandbox{'es' if len(removed) != 1 else ''}"
           + (f": {', '.join(removed)}" if removed else ""))  # fmt: skip
    from hutch import stamp

    # A cache: the next `hutch build` in each place writes its stamp again.
    shutil.rmtree(stamp.stamps_dir(), ignore_errors=True)
    return 0


def audit(ws: Workspace, session_id: str | None, as_json: bool) -> int:
    import json

    from hutch.egress.audit import AuditReadError, format_summary, read_events, summarise
    from hutch.egress.session import audit_path
    from hutch.guard import audit_dir

    directory = Path(audit_dir(ws.dirs.state))
    if session_id is None:
        # The newest session of this project.
        records = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in records:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if data.get("project") == str(ws.project):
                session_id = str(data.get("session"))
                break
        else:
            raise HutchError(
                f"no finished session recorded for {ws.project}",
                "run `hutch` (or `hutch exec`) first; name a session with `hutch audit SESSION`",
            )
    record_path = directory / f"{session_id}.json"
    egress_path = audit_path(ws.dirs.state, session_id)
    if not record_path.exists() and not egress_path.exists():
        raise HutchError(f"no audit record for session {session_id!r}", "`hutch ps` lists sessions")
    record: dict[str, object] = {}
    if record_path.exists():
        record = json.loads(record_path.read_text())
    try:
        events = read_events(egress_path) if egress_path.exists() else []
    except AuditReadError as err:
        raise HutchError(str(err), "the audit file is damaged; it is plain JSON lines") from err
    if as_json:
        record["connections"] = [e.__dict__ for e in events]
        print(json.dumps(record, indent=1))
        return 0
    summary = summarise(events)
    print(f"session {session_id}  project {record.get('project', '?')}  agent {record.get('agent', '?')}")
    changes = record.get("changes") or []
    assert isinstance(changes, list)
    if changes:
        print(f"\nChanged host-executed files ({len(changes)}):")
        for change in changes:
            print(f"  {change['kind']:<14} {change['path']}  {change['detail']}")
    print()
    print(format_summary(summary), end="")
    for key, title in (("masked_files", "Masked files"), ("masked_dirs", "Masked directories"),
                       ("readonly", "Read-only inside")):  # fmt: skip
        items = record.get(key) or []
        assert isinstance(items, list)
        if items:
            print(f"\n{title} ({len(items)}):")
            for item in items:
                print(f"  {item}")
    return 0


def config_trust(ws: Workspace) -> int:
    from hutch import trust

    path = trust.trust(ws.dirs, ws.project)
    asks = trust.widening(ws.settings.merged.values, ws.project)
    ws.say(f"trusted {path} as it is now" + (f" ({'; '.join(asks)})" if asks else ""))
    return 0


def config_show(ws: Workspace) -> int:
    merged = ws.settings.merged
    width = max(len(k) for k in merged.values)
    for key, value in merged.values.items():
        shown = list(value) if isinstance(value, tuple) else value
        print(f"{key.ljust(width)} = {_toml(shown)}  # {merged.origins[key]}")
    for name, origin in merged.agent_origins.items():
        print(f"agents.{name} # {origin}")
    return 0


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


TEMPLATE = """\
# hutch project config. Every key is optional; `hutch config show` prints the
# effective values and where each one comes from.
version = 1
agent = "claude"

[image]
# base = "debian:bookworm-slim"
# packages = ["ripgrep"]          # extra apt packages
# npm = []                        # extra global npm packages
# pip = []                        # extra pip packages
# ca_certificates = "host"        # "host" | "none" | ["certs/corp.crt"]

[sandbox]
# workdir = "host"                # or "/workspace"
# env = ["LANG"]                  # host variables let in, by name
# mounts = ["~/datasets:/data:ro"]
# memory = "8g"
# cpus = 2
# pids = 4096
# auth = "isolated"               # "host" shares ~/.claude with the sandbox (risky)
# caches = ["npm", "pip"]

[network]
# mode = "allowlist"              # "allowlist" | "open" | "none"
# allow = ["api.github.com"]

[secrets]
# mask = ["*.tfstate"]
# unmask = [".env.test"]
"""


def config_init(project_flag: str | None, quiet: bool, force: bool) -> int:
    from hutch.paths import find_project_root

    project = find_project_root(os.getcwd(), project_flag)
    path = Path(project) / CONFIG_NAME
    if path.exists() and not force:
        raise HutchError(f"{path} exists; leaving it as it is", "pass --force to replace it")
    path.write_text(TEMPLATE)
    if not quiet:
        print(f"hutch: wrote {path}", file=sys.stderr)
    return 0


# -- doctor -----------------------------------------------------------------------


class _Checks:
    """doctor's output: one line per check, and the fix under each one that failed."""

    def __init__(self) -> None:
        self.problems = 0

    def report(self, ok: bool, what: str, fix: str = "") -> None:
        print(f"[{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.problems += 1
            print(f"       fix: {fix}")

    def warn(self, what: str, fix: str) -> None:
        # Works, but worse than it should: not counted as a failure.
        print(f"[warn] {what}")
        print(f"       fix: {fix}")

    def note(self, text: str) -> None:
        print(f"       {text}")


def doctor(make_workspace: Callable[[], Workspace]) -> int:
    checks = _Checks()
    report = checks.report
    try:
        ws = make_workspace()
    except ConfigError as err:
        report(False, f"config: {err.message}", err.hint or "fix the config file")
        return err.exit_code
    except HutchError as err:
        report(False, err.message, err.hint or "")
        return err.exit_code
    engine = ws.engine
    report(True, f"engine: {engine.name} ({engine.binary})")
    checks.note(f"why: {_engine_reason(ws)}")
    if engine.name == "podman":
        from hutch.engines.podman import Podman

        assert isinstance(engine, Podman)
        if not _podman_checks(engine, checks):
            return EXIT_ENGINE
    elif not _docker_checks(ws, checks):
        return EXIT_ENGINE
    base = ws.settings.base
    report(
        engine.image_id(base) is not None,
        f"base image {base} present",
        f"{engine.binary} pull {base} (or load it offline: {engine.binary} import)",
    )
    if ws.settings.ca_certificates == "host":
        try:
            certs = session.ca_files(ws)
        except ConfigError as err:
            report(False, err.message, err.hint or "")
        else:
            names = ", ".join(n for n, _ in certs) or "none"
            report(True, f"host CA certificates trusted in the image: {names}")
    for label, path in (("data", ws.dirs.data), ("state", ws.dirs.state)):
        try:
            os.makedirs(path, exist_ok=True)
            writable = os.access(path, os.W_OK)
        except OSError:
            writable = False
        report(writable, f"{label} directory {path} writable", f"fix permissions on {path}")
    return 0 if checks.problems == 0 else 1


def _engine_reason(ws: Workspace) -> str:
    setting = ws.settings.engine
    if setting != "auto":
        return f'engine = "{setting}" from {ws.settings.merged.origins.get("engine", "config")}'
    from hutch.engines import select

    return select("auto").why


def _docker_checks(ws: Workspace, checks: _Checks) -> bool:
    engine = ws.engine
    report = checks.report
    try:
        version = engine.version()
    except HutchError as err:
        report(False, err.message, err.hint or "")
        _socket_check(checks)
        return False
    if not version.ok:
        report(False, f"{engine.name} daemon: {version.stderr.strip()}", "start the daemon")
        _socket_check(checks)
        return False
    report(True, f"{engine.name} daemon answers (server {version.stdout.strip()})")
    _socket_check(checks)
    if engine.has_buildkit():
        report(True, "BuildKit (buildx) available")
    else:
        print("[ok] buildx not installed: hutch uses the classic builder")
    return True


def _socket_check(checks: _Checks) -> None:
    sock = "/var/run/docker.sock"
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return
    if host:
        sock = host[len("unix://"):]
    if not os.path.exists(sock):
        return
    ok = os.access(sock, os.R_OK | os.W_OK)
    try:
        group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    except KeyError:
        group = str(os.stat(sock).st_gid)
    checks.report(ok, f"socket {sock} accessible (group {group})",
                  f"sudo usermod -aG {group} $USER, then log in again")  # fmt: skip


TUN_DEVICE = "/dev/net/tun"
# Where Podman looks for the init it runs as PID 1 (`--init`), by distribution.
CATATONIT_PATHS = (
    "/usr/libexec/podman/catatonit",
    "/usr/local/libexec/podman/catatonit",
    "/usr/lib/podman/catatonit",
)


def _podman_checks(engine: Podman, checks: _Checks) -> bool:
    import json

    from hutch.engines.podman import SUBID_FIX

    report = checks.report
    try:
        version = engine.version()
        info = engine.info("json")
    except HutchError as err:
        report(False, err.message, err.hint or "")
        return False
    if not version.ok or not info.ok:
        failed = version if not version.ok else info
        report(False, f"podman: {failed.stderr.strip()[-400:]}",
               f"run `{engine.binary} info` and fix what it says; {engine.install_hint}")  # fmt: skip
        return False
    try:
        data = json.loads(info.stdout)
        host, store = data["host"], data["store"]
        rootless = bool(host["security"]["rootless"])
        driver = str(store["graphDriverName"])
        cgroups = str(host.get("cgroupVersion", ""))
        uidmap = host.get("idMappings", {}).get("uidmap") or []
        config_file = str(store.get("configFile", ""))
    except (ValueError, KeyError, TypeError) as err:
        report(False, f"cannot read `{engine.binary} info`: {err}", "upgrade Podman to 4.x")
        return False
    mode = "rootless" if rootless else "rootful"
    report(True, f"podman {version.stdout.strip()} works, {mode} (no daemon needed)")
    if rootless != engine.host.rootless:
        report(False, f"podman reports {mode}, but hutch assumed the opposite from your user ID",
               "unset CONTAINER_HOST: hutch runs local Podman")  # fmt: skip
    if rootless:
        report(len(uidmap) > 1, f"subordinate ID ranges for uid {os.getuid()} (keep-id maps you "
               "to the same uid inside)", SUBID_FIX)  # fmt: skip
        slirp = shutil.which("slirp4netns") is not None
        report(slirp, "slirp4netns present (network for --network open)",
               "sudo apt-get install slirp4netns")  # fmt: skip
        tun = os.access(TUN_DEVICE, os.R_OK | os.W_OK)
        report(tun, f"{TUN_DEVICE} usable (slirp4netns: image builds and --network open)",
               f"sudo modprobe tun; sudo chmod 0666 {TUN_DEVICE} (its usual mode)")  # fmt: skip
    if driver == "vfs":
        overridden = "overwritten by graph driver" in info.stderr
        conf = config_file or (
            "~/.config/containers/storage.conf" if rootless else "/etc/containers/storage.conf")
        if conf.startswith("/usr/share/"):
            conf = "/etc/containers/storage.conf"  # the packaged default: override it in /etc
        fix = (
            f'write {conf} with the lines [storage] and driver = "overlay"; then '
            f"`{engine.binary} system reset` "
            "(it deletes this user's Podman images and containers) so that the new driver "
            "takes effect, and `hutch build` again"
        )
        if overridden:
            fix = (f"{conf} already asks for overlay, but the storage was created with vfs: "
                   f"`{engine.binary} system reset` (deletes this user's Podman images and "
                   "containers), then `hutch build`")  # fmt: skip
        checks.warn("storage driver vfs: every launch copies the whole image (seconds, not "
                    "a fraction of one)", fix)  # fmt: skip
    else:
        report(True, f"storage driver {driver}")
    if rootless and cgroups == "v1":
        checks.warn(
            "cgroup v1: rootless Podman cannot enforce memory or CPU limits; hutch runs "
            "sandboxes without them and caps processes with RLIMIT_NPROC instead",
            "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or use rootful "
            "Podman or Docker, to have the limits enforced",
        )
    elif cgroups:
        report(True, f"cgroup {cgroups}: memory, CPU and process limits enforced")
    found = next((p for p in CATATONIT_PATHS if os.path.exists(p)), None)
    if found:
        report(True, f"init for PID 1 present ({found})")
    else:
        checks.warn(f"catatonit not found in {', '.join(CATATONIT_PATHS)}; hutch runs with --init",
                    "sudo apt-get install catatonit (unless containers.conf sets init_path)")  # fmt: skip
    return True
