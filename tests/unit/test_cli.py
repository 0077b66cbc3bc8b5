from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hutch.cli import main, split_argv


@pytest.mark.parametrize(
    ("argv", "expected", "tail"),
    [
        ([], ["run"], ()),
        (["--", "-p", "hi"], ["run"], ("-p", "hi")),
        (["codex"], ["run", "codex"], ()),
        (["-q", "build"], ["-q", "build"], ()),
        (["--project", "/x", "exec", "--", "ls", "-la"], ["--project", "/x", "exec"], ("ls", "-la")),
        (["--network", "open"], ["run", "--network", "open"], ()),
        (["--version"], ["--version"], ()),
    ],
)
def test_split_argv(argv: list[str], expected: list[str], tail: tuple[str, ...]) -> None:
    assert split_argv(argv) == (expected, tail)


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["exec", "--network", "sideways", "--", "true"])
    assert info.value.code == 2
    assert "sideways" in capsys.readouterr().err


def test_exec_without_command_is_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["exec"]) == 2
    assert "exec needs a command" in capsys.readouterr().err


def test_bad_flag_value_is_config_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["exec", "--memory", "lots", "--dry-run", "--", "true"]) == 3
    err = capsys.readouterr().err
    assert "--memory" in err and "Traceback" not in err


# The scanner and argparse read the same table; whenever the scanner accepts a
# command line, argparse must accept it too and read exactly the same values.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hutch.cli import COMMANDS, GLOBAL_OPTIONS, _scan, build_parser, parse  # noqa: E402

_FLAGS = sorted(
    {flag for option in GLOBAL_OPTIONS for flag in option[0]}
    | {flag for _, groups, _ in COMMANDS.values() for _, opts in groups for o in opts for flag in o[0]}
)
_WORDS = st.sampled_from(
    [*COMMANDS, *_FLAGS, "claude", "codex", "show", "1.5", "-1", "4g", "x=y", "a:b", "", "-",
     "--net", "-qi", "--cpus=2", "--env=A", "--network=open", "--dry-run=1", "--nope"]
)  # fmt: skip


def _argparse_values(args: list[str]) -> dict[str, object] | None:
    try:
        return vars(build_parser().parse_args(args))
    except SystemExit:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_WORDS, max_size=8))
def test_scanner_agrees_with_argparse(words: list[str]) -> None:
    scanned = _scan(words)
    if scanned is None:
        return
    expected = _argparse_values(words)
    assert expected is not None, words
    assert vars(scanned) == expected, words


@pytest.mark.parametrize(
    "args",
    [
        ["exec", "--network", "open", "true"],
        ["-q", "exec", "--network=allowlist", "--allow", "a.example", "--allow", "b:8443", "ls"],
        ["run", "codex", "--env", "FOO", "--mount", "/a:/b:ro", "--cpus", "1.5", "--pids", "64"],
        ["--engine", "podman", "--project", "/p", "build", "--no-cache", "aider"],
        ["config", "show"],
        ["stop", "abc123"],
        ["audit", "--json"],
        ["shell", "--debug", "--dry-run"],
    ],
)
def test_scanner_reads_common_lines_like_argparse(args: list[str]) -> None:
    scanned = _scan(args)
    assert scanned is not None, "the scanner should take this line itself"
    assert vars(scanned) == _argparse_values(args)


@pytest.mark.parametrize(
    "args",
    [
        ["exec", "--net", "open", "true"],  # an abbreviation: argparse's business
        ["exec", "-it", "bash"],  # bundled short flags
        ["exec", "--cpus", "lots", "true"],
        ["config", "sideways"],
        ["stop"],
        ["exec", "a", "--dry-run", "b"],
    ],
)
def test_scanner_leaves_the_unusual_to_argparse(args: list[str]) -> None:
    assert _scan(args) is None
    expected = _argparse_values(args)
    if expected is not None:  # argparse accepts it: parse() must give argparse's reading
        assert vars(parse(args)) == expected


def test_version_alone_and_among_flags_print_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    quick = capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["-q", "--version"])  # argparse's reading
    assert info.value.code == 0
    assert capsys.readouterr().out == quick and quick.startswith("hutch ")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_quick_exit_runs_atexit_flushes_and_keeps_the_status(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    done = _run_python(
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "sys.stdout.write('buffered, no newline')\n"
        "from hutch.cli import _quick_exit\n"
        "_quick_exit(7)\n"
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout == "buffered, no newline"
    assert marker.exists()


def test_quick_exit_waits_for_a_running_non_daemon_thread(tmp_path: Path) -> None:
    marker = tmp_path / "thread-finished"
    done = _run_python(
        "import threading, time\n"
        f"def work():\n    time.sleep(0.3)\n    open({str(marker)!r}, 'w').close()\n"
        "threading.Thread(target=work).start()\n"
        "from hutch.cli import _quick_exit\n"
        "_quick_exit(3)\n"
    )
    assert done.returncode == 3, done.stderr
    assert marker.exists()


def test_console_script_entry_prints_version() -> None:
    done = _run_python("import sys; sys.argv[1:] = ['--version']; from hutch.cli import entry; entry()")
    assert done.returncode == 0 and done.stdout.startswith("hutch "), done.stderr
