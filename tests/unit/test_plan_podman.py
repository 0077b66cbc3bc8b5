"""Golden Podman command lines, rootful and rootless: every security flag pinned."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.agents import BUILTIN
from hutch.config import Settings, load_settings
from hutch.engines import choose, detect, select
from hutch.engines.docker import Docker
from hutch.engines.podman import Podman, PodmanHost, Rlimit, detect_host
from hutch.errors import EngineUnavailable, SetupFailed, UsageError
from hutch.paths import Dirs
from hutch.plan import EnvVar, HostFacts, Identity, RunPlan, build_run_plan

ENV = {"HOME": "/home/alice", "SECRET_TOKEN": "hunter2", "LANG": "C.UTF-8", "HTTPS_PROXY": "http://u:pw@p"}
INF = resource.RLIM_INFINITY

CATATONIT = "/usr/libexec/podman/catatonit"
ROOTFUL = PodmanHost(rootless=False, cgroup_v2=False, nofile=Rlimit(20000, 20000),
                     nproc=Rlimit(96551, 96551), init=CATATONIT)  # fmt: skip
ROOTLESS_V2 = PodmanHost(rootless=True, cgroup_v2=True, nofile=Rlimit(1024, 524288),
                         nproc=Rlimit(63000, 63000), init=CATATONIT)  # fmt: skip
ROOTLESS_V1 = ROOTLESS_V2._replace(cgroup_v2=False)


def facts(project: str) -> HostFacts:
    return HostFacts(
        project=project,
        cwd=project,
        home="/home/alice",
        identity=Identity(1234, 4321, "alice"),
        environ=ENV,
        agent_home="/data/homes/claude",
        cache_root="/data/caches",
        identity_files=("/data/identity/passwd", "/data/identity/group"),
        owner_pid=99,
        hostname="box",
        empty_file="/data/empty/file",
        empty_dir="/data/empty/dir",
    )


def settings(tmp_path: Path, toml: str = "") -> Settings:
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    (project / "hutch.toml").write_text(toml)
    d = Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))
    return load_settings(d, project, None)


def plan_for(tmp_path: Path, toml: str = "", project: str = "/src/my proj") -> RunPlan:
    return build_run_plan(
        settings(tmp_path, toml),
        BUILTIN["claude"],
        facts(project),
        image="hutch-claude:abc",
        session="s1",
        command=("claude", "--dangerously-skip-permissions"),
        interactive=True,
        tty=False,
    )


# The default is this machine's CPU count: the golden lines name their own.
TWO_CPUS = "[sandbox]\ncpus = 2\n"
LABELS = [
    "--label", "io.hutch.managed=true", "--label", "io.hutch.session=s1",
    "--label", "io.hutch.project=/src/my proj", "--label", "io.hutch.agent=claude",
    "--label", "io.hutch.pid=99", "--label", "io.hutch.host=box",
]  # fmt: skip
MOUNTS = [
    "--mount", "type=bind,source=/src/my proj,target=/src/my proj",
    "--mount", "type=bind,source=/data/homes/claude,target=/home/hutch",
    "--mount", "type=bind,source=/data/identity/passwd,target=/etc/passwd,readonly",
    "--mount", "type=bind,source=/data/identity/group,target=/etc/group,readonly",
]  # fmt: skip


def env_args(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]


def test_golden_rootful(tmp_path: Path) -> None:
    argv = Podman(host=ROOTFUL).run_argv(plan_for(tmp_path, TWO_CPUS))
    cut = argv.index("--env")
    assert argv[:cut] == [
        "podman", "run", "--rm", "--pull", "never", "--name", "hutch-my-proj-s1", "--interactive",
        *LABELS,
        "--userns", "host",
        "--user", "1234:4321",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--init",
        "--http-proxy=false",
        "--env-host=false",
        "--network", "none",
        "--hostname", "hutch",
        "--memory", "8g", "--cpus", "2", "--pids-limit", "4096",
        "--ulimit", "nproc=4096:4096",
        "--ulimit", "nofile=20000:20000",
        "--workdir", "/src/my proj",
        *MOUNTS,
    ]  # fmt: skip
    assert argv[-3:] == ["hutch-claude:abc", "claude", "--dangerously-skip-permissions"]
    for flag in ("--privileged", "--cap-add", "--tty", "--pid", "--ipc", "--uts", "--env-file",
                 "--volume", "--env-host=true", "--http-proxy=true"):  # fmt: skip
        assert flag not in argv
    joined = " ".join(argv)
    for text in ("docker.sock", "podman.sock", "hunter2", "u:pw"):
        assert text not in joined


def test_golden_rootless(tmp_path: Path) -> None:
    argv = Podman(host=ROOTLESS_V2).run_argv(plan_for(tmp_path, TWO_CPUS))
    cut = argv.index("--env")
    assert argv[:cut] == [
        "podman", "run", "--rm", "--pull", "never", "--name", "hutch-my-proj-s1", "--interactive",
        *LABELS,
        "--userns", "keep-id",
        "--user", "1234:4321",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--init",
        "--http-proxy=false",
        "--env-host=false",
        "--network", "none",
        "--hostname", "hutch",
        "--memory", "8g", "--cpus", "2", "--pids-limit", "4096",
        "--ulimit", "nproc=4096:4096",
        "--ulimit", "nofile=1024:524288",
        "--workdir", "/src/my proj",
        *MOUNTS,
    ]  # fmt: skip
    assert Podman(host=ROOTLESS_V2).limits_gap(plan_for(tmp_path)) is None


def test_rootless_cgroup_v1_runs_without_cgroup_limits(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    podman = Podman(host=ROOTLESS_V1)
    argv = podman.run_argv(plan)
    for flag in ("--memory", "--cpus", "--pids-limit"):
        assert flag not in argv
    # The process limit survives as an rlimit, at the plan's number.
    assert argv[argv.index("--init") :].count("--ulimit") == 2
    assert "nproc=4096:4096" in argv
    gap = podman.limits_gap(plan)
    assert gap is not None
    assert gap.summary == "limits: 4096 processes only (rootless Podman on cgroup v1)"
    assert "without them" in gap.warning and "cgroup v2" in gap.warning
    # Never above what the user may have.
    low = Podman(host=ROOTLESS_V1._replace(nproc=Rlimit(100, 500))).run_argv(plan)
    assert "nproc=500:500" in low
    assert Podman(host=ROOTFUL).limits_gap(plan) is None
    assert Docker().limits_gap(plan) is None


def test_unlimited_rlimits_are_not_pinned(tmp_path: Path) -> None:
    host = ROOTFUL._replace(nofile=Rlimit(INF, INF), nproc=Rlimit(1024, INF))
    argv = Podman(host=host).run_argv(plan_for(tmp_path))
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--ulimit"] == ["nproc=4096:4096"]
    v1 = ROOTLESS_V1._replace(nproc=Rlimit(INF, INF))
    assert "nproc=4096:4096" in Podman(host=v1).run_argv(plan_for(tmp_path))


@pytest.mark.parametrize(
    ("host", "expected"),
    [(ROOTFUL, "bridge"), (ROOTLESS_V2, "slirp4netns:allow_host_loopback=false")],
)
def test_open_network(tmp_path: Path, host: PodmanHost, expected: str) -> None:
    argv = Podman(host=host).run_argv(plan_for(tmp_path, '[network]\nmode = "open"\n'))
    assert argv[argv.index("--network") + 1] == expected
    none = Podman(host=host).run_argv(plan_for(tmp_path, '[network]\nmode = "none"\n'))
    assert none[none.index("--network") + 1] == "none"


def test_odd_path_is_one_quoted_mount_field(tmp_path: Path) -> None:
    odd = "/src/a,b:c=d\"e\nf "
    plan = plan_for(tmp_path, project=odd)
    podman = Podman(host=ROOTLESS_V2)
    assert podman.mount_args(plan.mounts[0])[1] == (
        'type=bind,"source=/src/a,b:c=d""e\nf ","target=/src/a,b:c=d""e\nf "'
    )
    assert podman.mount_args(plan.mounts[0]) == Docker().mount_args(plan.mounts[0])


def test_secret_env_never_in_argv(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, '[sandbox]\nenv = ["SECRET_TOKEN", "LITERAL=value1"]\n')
    podman = Podman(host=ROOTLESS_V2)
    argv = podman.run_argv(plan)
    assert "hunter2" not in " ".join(argv) and "value1" not in " ".join(argv)
    env = env_args(argv)
    # Named values travel in the session's env file, not even by name here.
    assert not [e for e in env if e.startswith(("SECRET_TOKEN", "LITERAL", "LANG", "HTTPS_PROXY"))]
    assert "HUTCH_ENV_FILE=/run/hutch/env" in env
    assert "hunter2" not in podman.client_env(plan, {"PATH": "/bin"}).values()


def test_env_name_that_podman_would_expand_is_refused(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    bad = plan._replace(env=(*plan.env, EnvVar("AWS_*", "", secret=True)))
    with pytest.raises(SetupFailed) as info:
        Podman(host=ROOTFUL).run_argv(bad)
    assert info.value.exit_code == 125


def test_build_command() -> None:
    cmd = Podman(host=ROOTLESS_V2).build_command(
        "hutch-claude:abc", "/ctx", labels={"io.hutch.recipe": "d1"}, no_cache=True, buildkit=False
    )
    # The host's proxy variables stay out of the build's steps unless the user says so.
    assert cmd.argv == ("podman", "build", "--format", "docker", "--tag", "hutch-claude:abc",
                        "--http-proxy=false", "--label", "io.hutch.recipe=d1", "--no-cache",
                        "/ctx")  # fmt: skip
    assert dict(cmd.env) == {} and cmd.buildkit is False
    assert {"HTTPS_PROXY", "https_proxy", "ALL_PROXY"} <= set(cmd.unset)
    asked = Podman(host=ROOTLESS_V2).build_command("t", "/ctx", labels={}, no_cache=False,
                                                   buildkit=False, proxy=True)  # fmt: skip
    assert "--http-proxy=false" not in asked.argv and asked.unset == ()


def test_detect_host_here() -> None:
    host = detect_host()
    assert host.rootless == (os.geteuid() != 0)
    assert host.nofile.soft <= host.nofile.hard


@pytest.mark.parametrize(
    ("stderr", "needle"),
    [
        ('cannot find newuidmap: exec: "newuidmap": executable file not found in $PATH', "uidmap"),
        ("cannot find mappings for user alice: no subuid ranges found for user", "--add-subuids"),
        ("Error: container-init binary not found on the host: stat /usr/libexec/podman/catatonit",
         "catatonit"),
        ("cannot clone: Operation not permitted\nError: cannot re-exec process", "user_namespaces"),
        ('Error: building at STEP "RUN true": failed to read from slirp4netns sync pipe: EOF',
         "/dev/net/tun"),
    ],
)  # fmt: skip
def test_unavailable_messages_say_how_to_fix(stderr: str, needle: str) -> None:
    with pytest.raises(EngineUnavailable) as info:
        Podman(host=ROOTLESS_V2).raise_if_unavailable(stderr)
    assert info.value.exit_code == 4
    assert needle in (info.value.hint or "")
    Podman(host=ROOTLESS_V2).raise_if_unavailable("Error: some/image: image not known")


# -- choosing the engine ------------------------------------------------------------


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty PATH directory to put fake engine binaries in; no Docker config."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for var in ("HUTCH_ENGINE", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    yield bin_dir


def install(bin_dir: Path, name: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def test_explicit_and_env_choice(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(choose("podman"), Podman)
    assert isinstance(choose("docker"), Docker)
    monkeypatch.setenv("HUTCH_ENGINE", "podman")
    chosen = select("auto")
    assert isinstance(chosen.engine, Podman) and chosen.why == "HUTCH_ENGINE=podman"
    # A config or flag naming the engine wins over the environment.
    assert isinstance(choose("docker"), Docker)
    monkeypatch.setenv("HUTCH_ENGINE", "lxc")
    with pytest.raises(UsageError):
        choose("auto")
    with pytest.raises(UsageError):
        choose("lxc")


def test_auto_prefers_a_docker_daemon_that_answers(
    fake_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(fake_path, "docker")
    install(fake_path, "podman")
    sock_path = str(tmp_path / "d.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock_path}")
    assert detect() == ("podman", f"auto: the Docker daemon is not running (no {sock_path}); "
                                  "Podman is installed")  # fmt: skip
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(sock_path)
        server.listen(1)
        assert detect() == ("docker", "auto: the Docker daemon answers")
    # A remote daemon is configured on purpose: no probe.
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert detect()[0] == "docker"


def test_auto_without_podman_keeps_docker_and_its_errors(
    fake_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(fake_path, "docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")
    name, why = detect()
    assert name == "docker" and why.startswith("auto: only Docker is installed")


def test_auto_with_nothing_installed(fake_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as info:
        detect()
    assert info.value.exit_code == 4 and "podman" in (info.value.hint or "")
