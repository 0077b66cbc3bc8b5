"""Threat model 9 (apart): projects, sessions and local users stay apart, and a
cloned repository's hutch.toml widens nothing. Each guarantee with its control."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Built, Engine, Hutch, wait_for

pytestmark = [pytest.mark.integration]

CANARY = "CANARY_7e1f0c2b"
OTHER_UID = 1234  # another local user (the non-root test user's uid)


def sh(hutch: Hutch, cwd: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return hutch.run("-q", "exec", "--network", "none", *flags, "--", "sh", "-c", script, cwd=cwd)


# -- 3. another local user cannot choose the project root ---------------------------


@pytest.mark.engines("docker", "podman-rootless")
def test_a_hutch_toml_planted_in_a_shared_directory_is_ignored(engine: Engine, hutch: Hutch) -> None:
    other = OTHER_UID if engine.uid != OTHER_UID else OTHER_UID + 1
    shared = hutch.root / "tmp"  # as /tmp: sticky and writable by everyone
    repo = shared / "x" / "repo"
    repo.mkdir(parents=True)
    (shared / "neighbour.txt").write_text(CANARY)
    hutch.own(shared)
    planted = shared / "hutch.toml"
    planted.write_text('[sandbox]\nmemory = "1g"\n')
    os.chown(planted, other, other)
    shared.chmod(0o1777)
    result = sh(hutch, repo, "pwd; cat ../../neighbour.txt 2>&1")
    assert result.stdout, result.stderr
    assert result.stdout.splitlines()[0] == str(repo)  # the project is the repository...
    assert CANARY not in result.stdout  # ...and the shared directory is not in the sandbox
    assert f"ignoring {planted}" in result.stderr and "others can write it" in result.stderr
    # Control: the same file, the user's own in a directory only they can write,
    # makes that directory the project, and all of it is inside.
    os.chown(planted, engine.uid, engine.gid)
    shared.chmod(0o755)
    control = sh(hutch, repo, "pwd; cat ../../neighbour.txt")
    assert control.stdout.splitlines() == [str(repo), CANARY], control.stderr
    assert "ignoring" not in control.stderr
    # Another user's file in that private directory is still passed over.
    os.chown(planted, other, other)
    theirs = sh(hutch, repo, "pwd")
    assert theirs.stdout.strip() == str(repo)
    assert f"belongs to uid {other}" in theirs.stderr


def test_a_config_file_that_is_a_fifo_exits_3_without_waiting(hutch: Hutch, project: Path) -> None:
    os.mkfifo(project / "hutch.toml")
    result = hutch.run("exec", "--", "true", cwd=project, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "is not a regular file" in result.stderr
    (project / "hutch.toml").unlink()
    user_config = hutch.config / "hutch" / "config.toml"
    user_config.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(user_config)
    result = hutch.run("exec", "--", "true", cwd=project, timeout=30)
    assert result.returncode == 3 and str(user_config) in result.stderr
    # Control: a regular file there is read.
    user_config.unlink()
    user_config.write_text("version = 1\n")
    assert hutch.run("-q", "exec", "--", "true", cwd=project, timeout=60).returncode == 0


# -- 2. image builds get the host's proxy variables only when the user says so ----------


class _Recorder(socketserver.ThreadingTCPServer):
    """A stand-in proxy that writes down what reaches it and refuses it all."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("0.0.0.0", 0), _RecordRequest)
        self.seen: list[str] = []


class _RecordRequest(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Recorder)
        head = []
        for line in self.rfile:
            if not line.strip():
                break
            head.append(line.decode("latin-1").strip())
        self.server.seen.append(" | ".join(head))
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.engines("docker", "podman-rootless")
def test_builds_get_the_hosts_proxy_only_when_the_user_says_so(
    engine: Engine, hutch: Hutch, project: Path, recorder: _Recorder
) -> None:
    from .test_egress import host_seen_from_inside

    proxy = f"http://builduser:{CANARY}@{host_seen_from_inside(engine)}:{recorder.server_address[1]}"
    env = hutch.env(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, https_proxy=proxy)
    if not engine.podman:  # Docker's client adds the proxies of its config.json itself
        docker_config = hutch.home / ".docker" / "config.json"
        docker_config.parent.mkdir(parents=True, exist_ok=True)
        docker_config.write_text(json.dumps({"proxies": {"default": {"httpsProxy": proxy}}}))
        hutch.own(docker_config.parent)
    # A custom agent whose install step (pip, from PyPI) is the only step that
    # runs: a command name of its own keeps that layer out of the build cache.
    user_config = hutch.config / "hutch" / "config.toml"
    user_config.parent.mkdir(parents=True, exist_ok=True)

    def build(build_proxy: str) -> subprocess.CompletedProcess[str]:
        command = f"probe{os.urandom(4).hex()}"
        user_config.write_text(f'[image]\n{build_proxy}\n[agents.probe]\ninstall = "pip"\n'
                               f'package = "six"\nversion = "1.16.0"\ncommand = "{command}"\n')  # fmt: skip
        hutch.own(user_config.parent)
        return hutch.run("build", "probe", cwd=project, env=env, timeout=600)

    kept_out = build("")
    assert kept_out.returncode == 0, kept_out.stderr[-2000:]
    assert recorder.seen == []
    # Control: with the user's yes the same build goes through the host's proxy,
    # credentials and all (the stand-in refuses it, so the build fails).
    passed = build("build_proxy = true")
    assert passed.returncode == 5, passed.stderr[-2000:]
    assert recorder.seen and "pypi.org" in recorder.seen[0], recorder.seen
    assert any("Proxy-Authorization: Basic" in seen for seen in recorder.seen), recorder.seen


# -- 2. a repository's hutch.toml narrows; anything else needs the user's trust ----------


@pytest.mark.engines("docker", "podman-rootless")
def test_an_allow_entry_written_by_the_agent_needs_trust(
    hutch: Hutch, project: Path, recorder: _Recorder
) -> None:
    entry = f"127.0.0.1:{recorder.server_address[1]}"  # the host's loopback, by IP literal
    probe = f"NO_PROXY= no_proxy= curl -s -m 10 -x http://127.0.0.1:3128 http://{entry}/from-inside"
    # The agent writes a hutch.toml into the project: new content nobody trusted.
    wrote = hutch.run("-q", "exec", "--", "sh", "-c",
                      f"printf '[network]\\nallow = [\"{entry}\"]\\n' > hutch.toml", cwd=project)  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    # hutch.toml is host-executed: the new file was held at the end of the
    # session. The user accepts it, and it is still untrusted content.
    assert not (project / "hutch.toml").exists()
    session = wrote.stderr.split("hutch accept ")[1].split()[0]
    assert hutch.run("accept", session, "hutch.toml", cwd=project).returncode == 0
    refused = hutch.run("-q", "exec", "--", "sh", "-c", probe, cwd=project)
    assert refused.returncode == 3, refused.stderr
    assert f"[network] allow {entry}" in refused.stderr and "hutch config trust" in refused.stderr
    assert recorder.seen == []
    # Control: once the user has read and trusted that exact file, the entry works.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    trusted = hutch.run("-q", "exec", "--", "sh", "-c", probe, cwd=project)
    assert trusted.returncode == 0, trusted.stderr
    assert any("/from-inside" in seen for seen in recorder.seen), recorder.seen


@pytest.mark.engines("docker", "podman-rootless")
def test_image_contents_from_an_untrusted_project_are_not_built(hutch: Hutch, project: Path) -> None:
    # A base that does not exist: the build, once it runs, fails at FROM (exit 5).
    (project / "hutch.toml").write_text('[image]\nbase = "hutch-test-no-such-base:1"\n')
    hutch.own(project / "hutch.toml")
    refused = hutch.run("build", cwd=project)
    assert refused.returncode == 3, refused.stderr
    assert '[image] base = "hutch-test-no-such-base:1"' in refused.stderr
    assert "building" not in refused.stderr
    # Control: trusted, the same file does reach the engine's builder.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    built = hutch.run("build", cwd=project)
    assert built.returncode == 5, built.stderr
    assert "hutch-test-no-such-base" in built.stderr


@pytest.mark.engines("docker", "podman-rootless")
def test_a_project_mask_adds_to_the_users_own(hutch: Hutch, project: Path) -> None:
    user_config = hutch.config / "hutch" / "config.toml"
    user_config.parent.mkdir(parents=True, exist_ok=True)
    user_config.write_text('[secrets]\nmask = ["*.mine"]\n')
    (project / "a.mine").write_text(CANARY + "-mine")
    (project / "b.theirs").write_text(CANARY + "-theirs")
    # Untrusted, and meant to replace the user's list: it only adds to it.
    (project / "hutch.toml").write_text('[secrets]\nmask = ["*.theirs"]\n')
    hutch.own(project, user_config.parent)
    script = "cat a.mine b.theirs; echo end"
    control = sh(hutch, project, script, "--no-mask")
    assert CANARY + "-mine" in control.stdout and CANARY + "-theirs" in control.stdout
    masked = sh(hutch, project, script)
    assert masked.returncode == 0, masked.stderr
    assert CANARY not in masked.stdout and masked.stdout.strip() == "end"


# -- 6. any project path gives a valid container name ---------------------------------


@pytest.mark.engines("docker", "podman-rootless")
def test_a_project_named_in_any_script_starts(engine: Engine, hutch: Hutch, built: Built) -> None:
    project = hutch.root / ("prøject 日本 " + "ü" * 80)
    project.mkdir()
    hutch.own(project)
    result = hutch.run("-q", "exec", "--network", "none", "--", "pwd", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{project}\n"
    # Control: the name the slug used to keep (letters of any script) is one
    # the engine refuses, as it refused the whole launch (exit 125).
    refused = engine.cli("create", "--name", "hutch-prøject-日本-1a2b3c4d", built.tag, "true")
    assert refused.returncode != 0 and "name" in refused.stderr.lower(), refused.stderr


@pytest.mark.engines("docker", "podman-rootless")
def test_the_launch_line_names_masked_files_that_git_history_still_holds(
    hutch: Hutch, project: Path
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "safe.directory=*", "-c", "user.name=t", "-c", "user.email=t@e",
                        *args], cwd=project, check=True, capture_output=True)  # fmt: skip

    git("init", "-q")
    (project / ".env").write_text(CANARY + "-committed")
    (project / ".env.local").write_text(CANARY + "-untracked")
    git("add", ".env")
    git("commit", "-q", "-m", "oops")
    hutch.own(project)
    script = "cat .env .env.local; git show HEAD:.env; git show HEAD:.env.local 2>/dev/null; echo end"
    result = hutch.run("exec", "--network", "none", "--", "sh", "-c", script, cwd=project)
    assert result.returncode == 0, result.stderr
    # What the line says is so: the file reads empty, its committed content does not...
    assert result.stdout == CANARY + "-committedend\n"
    assert "2 secret files masked (tracked by git, so readable in its history: .env)" in result.stderr
    # ...and the masked file git does not track is neither named nor readable (the control).
    assert ".env.local" not in result.stderr.split("masked", 1)[1].split("\n")[0]


# -- 5. another local user and hutch's own files ----------------------------------------


def as_other(*argv: str) -> subprocess.CompletedProcess[str]:
    """argv as another local user (uid/gid OTHER_UID), who is no member of our groups."""
    return subprocess.run(["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups",
                           "--", *argv], capture_output=True, text=True, check=False)  # fmt: skip


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.engines("docker", "podman-rootless")
def test_records_are_unreadable_to_other_users_and_old_installs_are_fixed(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    state = hutch.state / "hutch"
    # An install from before: the state directory 0755 and a record 0644 in it.
    old = state / "audit" / "00000000.json"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text('{"project": "' + CANARY + '"}')
    for path in (state, old.parent):
        path.chmod(0o755)
    old.chmod(0o644)
    hutch.own(state)
    # Control: as it was, another local user reads it.
    assert as_other("cat", str(old)).stdout == old.read_text()
    result = sh(hutch, project, "true")
    assert result.returncode == 0, result.stderr
    denied = as_other("cat", str(old))
    assert denied.returncode != 0 and CANARY not in denied.stdout
    assert _mode(state) == _mode(hutch.data / "hutch") == 0o700
    records = [p for p in state.rglob("*") if p.is_file()]
    assert len(records) >= 3  # the old record, this session's audit record, the pins
    assert {_mode(p) for p in records} == {0o600}, {str(p): oct(_mode(p)) for p in records}


@pytest.mark.engines("docker", "podman-rootless")
def test_runtime_dir_is_private_and_its_long_socket_path_works(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    script = "curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:3128 http://denied.example/"
    proc = hutch.popen("-q", "exec", "--", "sh", "-c", f"{script}; sleep 30", cwd=project)
    try:
        found = wait_for(lambda: engine.project_containers(project), 60, "the session container")
        assert isinstance(found, list) and len(found) == 1
        session = found[0]["Config"]["Labels"]["io.hutch.session"]
        runtime = hutch.runtime_base / f"hutch-{engine.uid}-{session}"
        wait_for(lambda: (runtime / "egress" / "egress.sock").exists(), 60, "the proxy socket")
        assert _mode(runtime) == 0o700 and _mode(runtime.parent) == 0o700
        if engine.runtime_base is None:  # in the state directory: a path too long to bind directly
            assert len(str(runtime / "egress" / "egress.sock")) > 107
        wait_for(lambda: "403" in proc.stdout, 60, "the proxy's answer")  # the proxy serves
    finally:
        proc.terminate()
    assert not runtime.exists()


@pytest.mark.engines("docker", "podman-rootless")
def test_removing_a_runtime_dir_follows_no_link_the_sandbox_planted(
    engine: Engine, hutch: Hutch, project: Path
) -> None:
    victim = hutch.root / "victim"
    victim.mkdir()
    (victim / "keep").write_text(CANARY)
    hutch.own(victim)
    planted = sh(hutch, project, f"ln -s {victim} /run/hutch/escape && ls -l /run/hutch/escape; "
                 "echo $HUTCH_SESSION")  # fmt: skip
    assert planted.returncode == 0 and str(victim) in planted.stdout, planted.stderr
    assert (victim / "keep").read_text() == CANARY
    session = planted.stdout.split()[-1]
    runtime = hutch.runtime_base / f"hutch-{engine.uid}-{session}"
    assert not runtime.exists() and not runtime.is_symlink()  # it went, the link with it
    # Control: a removal that follows the link empties the victim.
    mock = hutch.root / "mock-runtime"
    mock.mkdir()
    (mock / "escape").symlink_to(victim)
    subprocess.run(["rm", "-rf", f"{mock}/escape/"], check=True)
    assert not (victim / "keep").exists()


def test_gc_leaves_what_another_user_planted_alone(hutch: Hutch, project: Path) -> None:
    victim = hutch.root / "victim"
    victim.mkdir()
    (victim / "keep").write_text(CANARY)
    shared = hutch.root / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    # Another user plants, where older hutch versions made runtime dirs, a
    # directory named as ours holding a link to the victim.
    planted = shared / f"hutch-{os.getuid()}-deadbeef"
    made = as_other("sh", "-c", f"mkdir {planted} && ln -s {victim} {planted}/escape")
    assert made.returncode == 0, made.stderr
    # Our own stale runtime dir (a killed session's), with the same link inside.
    stale = hutch.runtime_base / f"hutch-{os.getuid()}-cafe1234"
    stale.mkdir(parents=True)
    (stale / "escape").symlink_to(victim)
    result = hutch.run("gc", cwd=project, env=hutch.env(TMPDIR=str(shared)))
    assert result.returncode == 0, result.stderr
    assert str(stale) in result.stderr and not stale.exists()  # the control: gc does sweep
    assert planted.is_dir() and (planted / "escape").is_symlink()
    assert (victim / "keep").read_text() == CANARY


# -- 1. one agent home per project; only the login is shared ----------------------------


def _two_projects(hutch: Hutch) -> tuple[Path, Path]:
    a, b = hutch.root / "project-a", hutch.root / "project-b"
    for path in (a, b):
        path.mkdir()
        hutch.own(path)
    return a, b


@pytest.mark.engines("docker", "podman-rootless")
def test_a_projects_home_is_its_own(hutch: Hutch) -> None:
    a, b = _two_projects(hutch)
    wrote = sh(hutch, a, f"mkdir -p ~/.claude/projects && echo {CANARY} > ~/.claude/projects/transcript")
    assert wrote.returncode == 0, wrote.stderr
    probe = "cat ~/.claude/projects/transcript 2>/dev/null; echo end"
    # Control: a second session of the same project reads it.
    assert sh(hutch, a, probe).stdout == f"{CANARY}\nend\n"
    other = sh(hutch, b, probe)
    assert other.returncode == 0, other.stderr
    assert other.stdout == "end\n"


@pytest.mark.engines("docker", "podman-rootless")
def test_a_planted_bashrc_runs_in_no_other_project(hutch: Hutch) -> None:
    a, b = _two_projects(hutch)
    planted = sh(hutch, a, f"echo 'echo PLANTED-{CANARY}' >> ~/.bashrc")
    assert planted.returncode == 0, planted.stderr
    probe = "bash -i -c 'echo shell' 2>/dev/null"
    # Control: in A's next session it runs.
    assert f"PLANTED-{CANARY}" in sh(hutch, a, probe).stdout
    other = sh(hutch, b, probe)
    assert other.stdout.strip() == "shell", other.stdout + other.stderr


@pytest.mark.engines("docker", "podman-rootless")
def test_a_login_in_one_project_serves_the_others(hutch: Hutch) -> None:
    a, b = _two_projects(hutch)
    token = json.dumps({"claudeAiOauth": {"accessToken": CANARY}})
    account = json.dumps({"oauthAccount": {"emailAddress": "me@example.org"},
                          "projects": {str(a): {"history": ["A-ONLY"]}}})  # fmt: skip
    login = sh(hutch, a, f"mkdir -p ~/.claude && printf '%s' '{token}' > ~/.claude/.credentials.json "
                         f"&& printf '%s' '{account}' > ~/.claude.json")  # fmt: skip
    assert login.returncode == 0, login.stderr
    seen = sh(hutch, b, "cat ~/.claude/.credentials.json; echo; cat ~/.claude.json")
    assert seen.returncode == 0, seen.stderr
    assert CANARY in seen.stdout and "me@example.org" in seen.stdout
    assert "A-ONLY" not in seen.stdout  # the rest of .claude.json is A's
