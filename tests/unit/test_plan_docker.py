"""Golden command lines: every security-relevant flag is pinned here."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.agents import BUILTIN
from hutch.config import Settings, load_settings
from hutch.config.load import Layer
from hutch.engines.base import csv_field
from hutch.engines.docker import Docker
from hutch.errors import UsageError
from hutch.paths import Dirs
from hutch.plan import (
    NO_MASKING,
    HostFacts,
    Identity,
    Masking,
    RunPlan,
    build_run_plan,
    parse_mount,
    passwd_entries,
    sandbox_user_name,
)

ENV = {"HOME": "/home/alice", "SECRET_TOKEN": "hunter2", "LANG": "C.UTF-8", "TERM": "xterm"}


def facts(project: str, cwd: str | None = None, runtime: str | None = None) -> HostFacts:
    return HostFacts(
        project=project,
        cwd=cwd or project,
        home="/home/alice",
        identity=Identity(1234, 4321, "alice"),
        environ=ENV,
        agent_home="/data/homes/claude",
        cache_root="/data/caches",
        identity_files=("/data/identity/passwd", "/data/identity/group"),
        owner_pid=99,
        hostname="box",
        runtime_dir=runtime,
        empty_file="/data/empty/file",
        empty_dir="/data/empty/dir",
    )


def settings(tmp_path: Path, toml: str = "", flags: Layer | None = None):  # type: ignore[no-untyped-def]
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    (project / "hutch.toml").write_text(toml)
    d = Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))
    return load_settings(d, str(project), flags)


def plan_for(s: Settings, host: HostFacts, masking: Masking = NO_MASKING) -> RunPlan:
    return build_run_plan(s, BUILTIN["claude"], host, image="i", session="s", command=("x",),
                          interactive=True, tty=False, masking=masking)  # fmt: skip


def argv_for(tmp_path: Path, toml: str = "", **kw: object) -> list[str]:
    s = settings(tmp_path, toml)
    plan = build_run_plan(
        s,
        BUILTIN["claude"],
        facts("/src/my proj", **kw),  # type: ignore[arg-type]
        image="hutch-claude:abc",
        session="s1",
        command=("claude", "--dangerously-skip-permissions"),
        interactive=True,
        tty=False,
    )
    return Docker().run_argv(plan)


def test_golden_argv(tmp_path: Path) -> None:
    # The whole command line: an added flag (say `--security-opt seccomp=unconfined`)
    # fails this as surely as a missing one.
    argv = argv_for(tmp_path, "[sandbox]\ncpus = 2\n")
    assert argv == [
        "docker", "run", "--rm", "--pull", "never", "--name", "hutch-my-proj-s1", "--interactive",
        "--label", "io.hutch.managed=true", "--label", "io.hutch.session=s1",
        "--label", "io.hutch.project=/src/my proj", "--label", "io.hutch.agent=claude",
        "--label", "io.hutch.pid=99", "--label", "io.hutch.host=box",
        "--user", "1234:4321",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--init",
        "--network", "none",
        "--hostname", "hutch",
        "--memory", "8g", "--cpus", "2", "--pids-limit", "4096",
        "--workdir", "/src/my proj",
        "--mount", "type=bind,source=/src/my proj,target=/src/my proj",
        "--mount", "type=bind,source=/data/homes/claude,target=/home/hutch",
        "--mount", "type=bind,source=/data/identity/passwd,target=/etc/passwd,readonly",
        "--mount", "type=bind,source=/data/identity/group,target=/etc/group,readonly",
        "--env", "HOME=/home/hutch", "--env", "USER=alice", "--env", "LOGNAME=alice",
        "--env", "SHELL=/bin/bash", "--env", "HUTCH_SESSION=s1",
        "--env", "IS_SANDBOX=1", "--env", "DISABLE_AUTOUPDATER=1",
        "hutch-claude:abc", "claude", "--dangerously-skip-permissions",
    ]  # fmt: skip


def test_workspace_workdir_and_cwd(tmp_path: Path) -> None:
    s = settings(tmp_path, '[sandbox]\nworkdir = "/workspace"\n')
    plan = plan_for(s, facts("/src/p", cwd="/src/p/a/b"))
    assert plan.workdir == "/workspace/a/b"
    assert plan.mounts[0].source == "/src/p" and plan.mounts[0].target == "/workspace"
    host = plan_for(settings(tmp_path), facts("/src/p", cwd="/src/p/a"))
    assert host.workdir == "/src/p/a"


def test_odd_project_path_is_one_quoted_mount_field(tmp_path: Path) -> None:
    s = settings(tmp_path)
    odd = "/src/a,b:c=d\"e"
    plan = plan_for(s, facts(odd))
    arg = Docker().mount_args(plan.mounts[0])[1]
    assert arg == 'type=bind,"source=/src/a,b:c=d""e","target=/src/a,b:c=d""e"'
    assert csv_field("plain") == "plain"
    assert csv_field("a\nb") == '"a\nb"'


def test_secret_env_values_never_in_argv(tmp_path: Path) -> None:
    s = settings(tmp_path, '[sandbox]\nenv = ["SECRET_TOKEN", "LANG", "LITERAL=value1", "MISSING"]\n')
    plan = plan_for(s, facts("/p", runtime="/run/x"))
    argv = Docker().run_argv(plan)
    joined = " ".join(argv)
    # Neither values nor names: named variables travel in the session's env file.
    assert "hunter2" not in joined and "value1" not in joined
    assert "SECRET_TOKEN" not in joined and "LITERAL" not in joined
    assert "HUTCH_ENV_FILE=/run/hutch/env" in joined
    secrets = {v.name: v.value for v in plan.env if v.secret}
    assert secrets == {"SECRET_TOKEN": "hunter2", "LANG": "C.UTF-8", "LITERAL": "value1"}
    assert plan.notes == ("MISSING is not set on the host; not passed",)
    assert Docker().client_env(plan, {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_env_file_is_private_and_quoted(tmp_path: Path) -> None:
    from hutch.sessions import write_env_file

    s = settings(tmp_path, '[sandbox]\nenv = ["ODD=it\'s $(x) `y`"]\n')
    plan = plan_for(s, facts("/p"))
    runtime = tmp_path / "rt"
    runtime.mkdir()
    write_env_file(runtime, plan)
    env_file = runtime / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    import subprocess

    out = subprocess.run(
        ["sh", "-c", f'set -a; . "{env_file}"; printf %s "$ODD"'], capture_output=True, text=True
    ).stdout
    assert out == "it's $(x) `y`"


def test_unnamed_host_env_never_passed(tmp_path: Path) -> None:
    plan = plan_for(settings(tmp_path), facts("/p"))
    names = {v.name for v in plan.env}
    assert "SECRET_TOKEN" not in names and "LANG" not in names
    assert names >= {"HOME", "USER", "HUTCH_SESSION", "IS_SANDBOX"}


def test_open_network_and_proxy_env(tmp_path: Path) -> None:
    s = settings(tmp_path, '[network]\nmode = "open"\n')
    plan = plan_for(s, facts("/p"))
    assert plan.network == "bridge"
    allow = settings(tmp_path)
    plan = plan_for(allow, facts("/p", runtime="/run/x"))
    assert plan.network == "none"
    env = {v.name: v.value for v in plan.env}
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:3128" and env["no_proxy"].startswith("localhost")
    assert any(m.source == "/run/x" and m.target == "/run/hutch" for m in plan.mounts)


def test_masking_mounts_are_readonly(tmp_path: Path) -> None:
    masking = Masking(files=(".env",), dirs=(".ssh",), readonly=(".git/hooks",))
    plan = plan_for(settings(tmp_path), facts("/p"), masking=masking)
    by_target = {m.target: m for m in plan.mounts}
    assert by_target["/p/.env"].source == "/data/empty/file" and by_target["/p/.env"].readonly
    assert by_target["/p/.ssh"].source == "/data/empty/dir" and by_target["/p/.ssh"].readonly
    assert by_target["/p/.git/hooks"].source == "/p/.git/hooks" and by_target["/p/.git/hooks"].readonly
    # Nested binds come after the project mount, or they would be hidden by it.
    assert plan.mounts[0].target == "/p"


def test_host_auth_mounts_agent_state(tmp_path: Path) -> None:
    s = settings(tmp_path, '[sandbox]\nauth = "host"\n')
    plan = plan_for(s, facts("/p"))
    targets = {m.target: m.source for m in plan.mounts}
    assert targets["/home/hutch/.claude"] == "/home/alice/.claude"
    assert targets["/home/hutch/.claude.json"] == "/home/alice/.claude.json"
    isolated = plan_for(settings(tmp_path), facts("/p"))
    assert not any(m.source.startswith("/home/alice") for m in isolated.mounts)


@pytest.mark.parametrize(
    ("spec", "source", "target", "ro"),
    [
        ("~/data:/data:ro", "/home/alice/data", "/data", True),
        ("rel/dir:/mnt/x", "/p/rel/dir", "/mnt/x", False),
        ("/a:b/c:/mnt:rw", "/a:b/c", "/mnt", False),
    ],
)
def test_parse_mount(spec: str, source: str, target: str, ro: bool) -> None:
    m = parse_mount(spec, "/p", "/home/alice")
    assert (m.source, m.target, m.readonly) == (source, target, ro)


@pytest.mark.parametrize(
    "spec", ["/a", "/a:relative", "/a:/", "/a:/etc/shadow", "/a:/proc/x", "/a:/run/hutch"]
)
def test_parse_mount_rejects(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_mount(spec, "/p", "/home/alice")


def test_engine_socket_mount_refused(tmp_path: Path) -> None:
    s = settings(tmp_path, '[sandbox]\nmounts = ["/var/run/docker.sock:/sock"]\n')
    with pytest.raises(UsageError, match="engine socket"):
        plan_for(s, facts("/p"))


def test_passwd_entries() -> None:
    passwd, group = passwd_entries(Identity(1234, 4321, "alice"))
    assert "alice:x:1234:4321:hutch sandbox user:/home/hutch:/bin/bash" in passwd.splitlines()
    assert "alice:x:4321:" in group.splitlines()
    assert passwd.startswith("root:x:0:0:")
    root_passwd, _ = passwd_entries(Identity(0, 0, "root"))
    assert root_passwd.splitlines()[0] == "root:x:0:0:hutch sandbox user:/home/hutch:/bin/bash"
    assert sum(line.startswith("root:") for line in root_passwd.splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "uid", "expected"),
    [("alice", 1000, "alice"), ("", 1234, "hutch"), ("bad name", 5, "hutch"), ("x", 0, "root"),
     ("nobody", 7, "hutch")],
)  # fmt: skip
def test_sandbox_user_name(name: str, uid: int, expected: str) -> None:
    assert sandbox_user_name(name, uid) == expected


@pytest.mark.parametrize("buildkit", [False, True])
def test_build_command_keeps_host_proxies_out_unless_asked(buildkit: bool) -> None:
    from hutch.engines.base import PROXY_VARIABLES

    cmd = Docker().build_command("hutch-claude:abc", "/ctx", labels={"io.hutch.recipe": "d"},
                                 no_cache=False, buildkit=buildkit)  # fmt: skip
    # Every proxy name, by name only: with the name unset in the client's
    # environment Docker passes nothing, not even its config.json's proxies.
    named = [cmd.argv[i + 1] for i, a in enumerate(cmd.argv) if a == "--build-arg"]
    assert named == list(PROXY_VARIABLES)
    assert cmd.unset == PROXY_VARIABLES
    assert cmd.argv[-1] == "/ctx" and not any("=" in n for n in named)
    asked = Docker().build_command("hutch-claude:abc", "/ctx", labels={}, no_cache=False,
                                   buildkit=buildkit, proxy=True)  # fmt: skip
    assert asked.unset == () and asked.argv.count("--build-arg") == len(PROXY_VARIABLES)


@pytest.mark.parametrize(
    ("project", "slug"),
    [
        ("/src/my-app", "my-app"),
        ("/src/prøject", "pr-ject"),
        ("/src/日本語", "project"),
        ("/src/  spaced  out  ", "spaced-out"),
        ("/src/" + "a" * 300, "a" * 24),
        ("/src/" + "a" * 23 + "-b", "a" * 23),
        ("/src/--.--", "project"),
        ("/src/x\udcff y", "x-y"),  # a name that is not UTF-8, as os.fsdecode gives it
        ("/", "root"),
    ],
)
def test_container_names_are_valid_for_any_project_path(project: str, slug: str) -> None:
    import re

    from hutch.plan import container_name

    name = container_name(project, "1a2b3c4d")
    assert name == f"hutch-{slug}-1a2b3c4d"
    # What Docker and Podman accept as a container name.
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name), name


def test_a_project_path_that_is_not_utf8_is_refused_not_mangled(tmp_path: Path) -> None:
    from hutch.errors import SetupFailed

    with pytest.raises(SetupFailed) as info:
        plan_for(settings(tmp_path), facts("/src/x\udcff"))
    assert info.value.exit_code == 125 and "not valid UTF-8" in info.value.message
    assert plan_for(settings(tmp_path), facts("/src/prøject")).mounts[0].source == "/src/prøject"
