"""The commands end to end through `hutch.cli.main`, on the fake engine.

The engine is faked at its boundary (tests/unit/conftest.py: FakeEngine,
registered in the real registry); everything between the command line and
the engine is the real code, config files and state directories included.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FakeEngine, Isolated

from hutch.cli import main
from hutch.engines.base import Container


@pytest.fixture
def project(tmp_path: Path, isolated: Isolated, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git project to work in, and a pinned agent version (no registry lookup)."""
    path = tmp_path / "proj"
    (path / ".git").mkdir(parents=True)
    (path / "src").mkdir()
    monkeypatch.chdir(path / "src")
    pins = {"claude": {"version": "1.0.0", "checked": time.time()}}
    isolated.hutch_state.mkdir(parents=True)
    (isolated.hutch_state / "versions.json").write_text(json.dumps(pins))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# -- run, exec --------------------------------------------------------------------------


def test_exec_dry_run_prints_the_engines_command(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / ".env").write_text("TOKEN=hunter2\n")
    assert main(["exec", "--dry-run", "--env", "FOO=bar", "--", "ls", "-la"]) == 0
    out = capsys.readouterr().out.splitlines()
    [plan] = fake_engine.plans
    assert shlex.split(out[0])[-2:] == ["-c", f"import sys; print('sandbox-ran', {plan.session!r}); "
                                               "sys.exit(0)"]  # fmt: skip
    assert out[1] == "# env file /run/hutch/env: FOO=<redacted>"
    assert plan.command == ("ls", "-la")
    assert plan.workdir == str(project / "src")
    assert plan.egress == "allowlist" and plan.network == "none"
    assert plan.image.startswith("hutch-claude:")
    masked = [m for m in plan.mounts if m.target == str(project / ".env")]
    empty_file = str(isolated.data / "hutch" / "empty" / "file")
    assert masked and masked[0].readonly and masked[0].source == empty_file
    # A dry run starts nothing and leaves no session behind.
    assert not list(isolated.runtime.iterdir())
    assert not (isolated.hutch_state / "sessions").exists()


def test_run_dry_run_runs_the_agent_with_its_arguments(
    fake_engine: FakeEngine, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dry-run", "--network", "none", "--", "-p", "hi"]) == 0
    [plan] = fake_engine.plans
    assert plan.command == ("claude", "--dangerously-skip-permissions", "-p", "hi")
    assert plan.egress == "none"
    assert capsys.readouterr().out.startswith(fake_engine.binary)


def test_exec_runs_the_sandbox_and_passes_its_status_through(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_engine.status = 7
    assert main(["exec", "--network", "none", "--", "true"]) == 7
    [plan] = fake_engine.plans
    captured = capfd.readouterr()  # the sandbox writes to the descriptor itself
    assert f"sandbox-ran {plan.session}" in captured.out
    assert f"session {plan.session} | project {project} -> {project} | network none" in captured.err
    # After the session: its record and runtime dir are gone, its audit record is there.
    assert os.listdir(isolated.hutch_state / "sessions") == []
    assert list(isolated.runtime.iterdir()) == []
    record = json.loads((isolated.hutch_state / "audit" / f"{plan.session}.json").read_text())
    assert (record["session"], record["project"], record["status"]) == (plan.session, str(project), 7)


def test_losing_the_engine_records_the_status_hutch_returns(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hutch.errors import EXIT_ENGINE, EngineUnavailable

    def image_id(tag: str) -> str | None:
        if fake_engine.plans:  # after the run: the daemon is gone
            raise EngineUnavailable("Cannot connect to the fake daemon")
        return "sha256:fake"

    fake_engine.status = 125  # what the client says when its daemon goes away
    monkeypatch.setattr(fake_engine, "image_id", image_id)
    assert main(["exec", "--network", "none", "--", "true"]) == EXIT_ENGINE
    [plan] = fake_engine.plans
    record = json.loads((isolated.hutch_state / "audit" / f"{plan.session}.json").read_text())
    assert record["status"] == EXIT_ENGINE  # the control above: a status that passes through


def test_records_that_cannot_be_written_never_change_the_status(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capfd: pytest.CaptureFixture[str]
) -> None:
    # Files where hutch's record directories should be: every write there fails.
    isolated.hutch_state.mkdir(parents=True, exist_ok=True)
    for name in ("sessions", "audit"):
        (isolated.hutch_state / name).write_text("in the way\n")
    fake_engine.status = 7
    assert main(["exec", "--network", "none", "--", "true"]) == 7
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert f"cannot record the running session in {isolated.hutch_state / 'sessions'}" in err
    assert f"cannot write the session's audit record in {isolated.hutch_state / 'audit'}" in err


def test_audit_reads_what_remains_of_a_damaged_record(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capsys: pytest.CaptureFixture[str]
) -> None:
    from hutch.egress.audit import AuditLog

    assert main(["exec", "--network", "none", "--", "true"]) == 0
    [plan] = fake_engine.plans
    (isolated.hutch_state / "audit" / f"{plan.session}.json").write_text("")  # emptied
    with AuditLog(isolated.hutch_state / "audit" / f"{plan.session}.egress.jsonl", plan.session) as log:
        log.record(host="a.example", port=443, decision="allow", reason="allowed by rule", rule=None,
                   bytes_up=1, bytes_down=2, method="CONNECT")  # fmt: skip
    capsys.readouterr()
    assert main(["audit", plan.session]) == 0
    out, err = capsys.readouterr()
    assert "cannot be read" in err and "1 connections: 1 allowed, 0 denied." in out


def test_config_init_on_a_full_disk_leaves_nothing_and_works_once_there_is_room(
    project: Path, tmp_path: Path
) -> None:
    import resource
    import sys

    def full_disk() -> None:  # in the child: files may not grow past 100 bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    argv = [sys.executable, "-c", "from hutch.cli import entry; entry()", "config", "init"]
    env = {**os.environ}
    for _ in range(2):  # and again: no empty hutch.toml stands in the way
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True,
                              preexec_fn=full_disk, check=False)  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"cannot write {project / 'hutch.toml'}" in done.stderr
        assert "config init` again" in done.stderr
        assert not [n for n in os.listdir(project) if n.startswith("hutch.toml")]
    # Control: with room, the same command writes the template.
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (project / "hutch.toml").read_text().startswith("#")


def test_exec_in_allowlist_mode_serves_the_proxy_for_the_session(
    fake_engine: FakeEngine, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exec", "--", "true"]) == 0
    [plan] = fake_engine.plans
    assert "network allowlist (" in capsys.readouterr().err
    assert any(m.target == "/run/hutch" for m in plan.mounts)


# -- ps, gc, audit, config show -----------------------------------------------------------


def _container(name: str, session: str, pid: int, host: str | None = None) -> Container:
    labels = {"io.hutch.managed": "true", "io.hutch.session": session, "io.hutch.agent": "claude",
              "io.hutch.project": "/p", "io.hutch.pid": str(pid),
              "io.hutch.host": host or os.uname().nodename}  # fmt: skip
    return Container(id=f"id-{session}", name=name, state="running", labels=labels)


def test_ps_lists_the_engines_sessions(
    fake_engine: FakeEngine, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_engine.containers_listed = [_container("hutch-p-aaaa", "aaaa", os.getpid())]
    assert main(["ps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SESSION", "AGENT", "STATE", "PROJECT", "CONTAINER"]
    assert lines[1].split() == ["aaaa", "claude", "running", "/p", "hutch-p-aaaa"]


def test_gc_removes_what_dead_sessions_left_and_keeps_live_ones(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = _dead_pid()
    sessions = isolated.hutch_state / "sessions"
    sessions.mkdir(parents=True)
    runtime = isolated.runtime / f"hutch-{os.getuid()}-bbbb"
    runtime.mkdir()
    record = {"session": "bbbb", "container": "hutch-p-bbbb", "pid": dead, "host": os.uname().nodename,
              "engine": "fake", "runtime_dir": str(runtime)}  # fmt: skip
    (sessions / "bbbb.json").write_text(json.dumps(record))
    orphan_runtime = isolated.runtime / f"hutch-{os.getuid()}-cccc"  # no record at all
    orphan_runtime.mkdir()
    fake_engine.containers_listed = [
        _container("hutch-p-live", "live", os.getpid()),  # this process: alive
        _container("hutch-p-dddd", "dddd", dead),  # its hutch is gone, no record
        _container("hutch-p-other", "other", dead, host="another-machine"),  # not ours to judge
    ]
    assert main(["gc"]) == 0
    assert sorted(fake_engine.removed) == ["hutch-p-bbbb", "hutch-p-dddd"]
    assert not runtime.exists() and not orphan_runtime.exists()
    assert os.listdir(sessions) == []
    assert "removed 3 leftover sandboxes" in capsys.readouterr().err


def test_audit_shows_the_latest_session_of_this_project(
    fake_engine: FakeEngine, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / ".env").write_text("A=1\n")
    assert main(["exec", "--network", "none", "--", "true"]) == 0
    [plan] = fake_engine.plans
    capsys.readouterr()
    assert main(["audit"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"session {plan.session}  project {project}  agent claude")
    assert "Masked files (1):\n  .env" in out
    assert main(["audit", plan.session, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["masked_files"] == [".env"] and record["connections"] == []


def test_audit_streams_the_sessions_connections_and_skips_damaged_lines(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capsys: pytest.CaptureFixture[str]
) -> None:
    from hutch.egress.audit import AuditLog

    assert main(["exec", "--network", "none", "--", "true"]) == 0
    [plan] = fake_engine.plans
    path = isolated.hutch_state / "audit" / f"{plan.session}.egress.jsonl"
    with AuditLog(path, plan.session) as log:
        for host, decision in (("a.example", "allow"), ("evil.example", "deny"), ("2001:db8::1", "deny")):
            log.record(host=host, port=443, decision="allow" if decision == "allow" else "deny",
                       reason=f"{decision} reason", rule=None, bytes_up=1, bytes_down=2,
                       method="CONNECT")  # fmt: skip
    with path.open("a") as file:
        file.write('{"time": "torn\n')
    capsys.readouterr()
    assert main(["audit", plan.session]) == 0
    out = capsys.readouterr().out
    assert "3 connections: 1 allowed, 2 denied." in out
    assert "1 line(s) of the log could not be read" in out
    assert "[2001:db8::1]:443  1 denied" in out and "evil.example:443  1 denied" in out
    assert main(["audit", plan.session, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [c["host"] for c in record["connections"]] == ["a.example", "evil.example", "2001:db8::1"]
    assert record["session"] == plan.session


def test_audit_without_a_session_says_what_to_do(
    fake_engine: FakeEngine, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit"]) == 1
    assert "no finished session recorded" in capsys.readouterr().err


def test_config_show_names_each_values_origin(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, capsys: pytest.CaptureFixture[str]
) -> None:
    user = isolated.config / "hutch" / "config.toml"
    user.parent.mkdir()
    user.write_text('[sandbox]\nmemory = "2g"\n')
    (project / "hutch.toml").write_text("[sandbox]\npids = 99\n")
    assert main(["config", "show"]) == 0
    shown = {line.split(" = ")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert shown["sandbox.memory"].endswith(f'"2g"  # user config {user}')
    assert shown["sandbox.pids"].endswith(f"99  # project config {project / 'hutch.toml'}")
    assert shown["network.mode"].endswith('"allowlist"  # default')
    assert shown["engine"].endswith('"auto"  # default')


def test_exec_uses_the_projects_own_home_and_gc_removes_those_of_vanished_projects(
    fake_engine: FakeEngine, project: Path, isolated: Isolated, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    assert main(["exec", "--network", "none", "--", "true"]) == 0
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    monkeypatch.chdir(other)
    assert main(["exec", "--network", "none", "--", "true"]) == 0
    homes = [next(m.source for m in plan.mounts if m.target == "/home/hutch") for plan in fake_engine.plans]
    assert homes[0] != homes[1]
    index = {Path(h).parent.parent / "project" for h in homes}
    assert sorted(p.read_text() for p in index) == sorted([f"{project}\n", f"{other}\n"])
    (other / ".git").rmdir()
    other.rmdir()
    capsys.readouterr()
    monkeypatch.chdir(project)
    assert main(["gc"]) == 0
    assert f"removed the agent homes of {other} (no longer there)" in capsys.readouterr().err
    assert Path(homes[0]).is_dir() and not Path(homes[1]).exists()


def test_config_init_force_replaces_a_link_and_refuses_a_fifo(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not hutch's")
    (project / "hutch.toml").symlink_to(elsewhere)
    assert main(["config", "init", "--force"]) == 0
    assert elsewhere.read_text() == "not hutch's"  # not written through the link
    assert not (project / "hutch.toml").is_symlink() and "version = 1" in (project / "hutch.toml").read_text()
    (project / "hutch.toml").unlink()
    os.mkfifo(project / "hutch.toml")
    assert main(["config", "init", "--force"]) == 3  # not a wait for a reader
    assert "is not a regular file" in capsys.readouterr().err


def test_doctor_names_this_projects_homes_and_those_of_vanished_projects(
    fake_engine: FakeEngine, project: Path, tmp_path: Path, isolated: Isolated,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    index = isolated.data / "hutch" / "projects" / "0123456789abcdef" / "project"
    index.parent.mkdir(parents=True)
    index.write_text(f"{tmp_path / 'gone'}\n")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok] this project's agent homes: " + str(isolated.data / "hutch" / "projects") in out
    assert f"[warn] agent homes of 1 project(s) no longer there: {tmp_path / 'gone'}" in out
    assert "fix: `hutch gc` removes them" in out
