from __future__ import annotations

import subprocess
import sys

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
    err = capsys.readouterr().err
    assert "sideways" in err and err.endswith("  hint: see `hutch exec --help`\n")


def test_usage_error_before_the_command_points_at_hutch_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--engine", "sideways"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("  hint: see `hutch --help`\n")


def test_exec_without_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec"]) == 2
    assert "exec needs a command" in capsys.readouterr().err


def test_bad_flag_value_is_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exec", "--memory", "lots", "--dry-run", "--", "true"]) == 3
    err = capsys.readouterr().err
    assert "--memory" in err and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-q", "--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hutch ")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_console_script_entry_prints_version() -> None:
    done = _run_python("import sys; sys.argv[1:] = ['--version']; from hutch.cli import entry; entry()")
    assert done.returncode == 0 and done.stdout.startswith("hutch "), done.stderr
