"""process.foreground: exit status, signal forwarding, and the grace period.

Each case runs in its own interpreter: foreground installs signal handlers
and the wake-up fd, which belong to a main thread of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hutch import process

DRIVER = """\
import os, signal, sys, threading
from hutch.process import foreground
cleaned = []
def send():
    os.kill(os.getpid(), signal.SIGTERM)
timer = threading.Timer({delay}, send)
timer.daemon = True
timer.start()
status, first, killed = foreground({argv!r}, None, own_group=True, on_signal=cleaned.append, grace={grace})
print(status, first, cleaned, killed)
"""


def _drive(argv: list[str], delay: float, grace: float) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", DRIVER.format(argv=argv, delay=delay, grace=grace)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), time.monotonic() - start


def test_status_passes_through_without_signals() -> None:
    out, _ = _drive(["sh", "-c", "exit 42"], delay=30, grace=5)
    assert out == "42 None [] False"


def test_forwarded_signal_ends_the_child() -> None:
    out, _ = _drive(["sh", "-c", "exec sleep 20"], delay=0.3, grace=5)
    assert out == f"{128 + 15} 15 [15] False"


def test_child_that_ignores_the_signal_is_killed_after_the_grace_period() -> None:
    # The control above ends at once; this child ignores SIGTERM, so it is
    # cleaned up after and killed once grace runs out, instead of waited for.
    out, took = _drive(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], delay=0.3, grace=1)
    assert out == f"{128 + 9} 15 [15] True"  # killed: hutch says so
    assert took < 10


def test_start_capture_reads_stdout_and_status_later() -> None:
    pending = process.start_capture(["sh", "-c", "printf 'a\\0b'; echo err >&2; exit 3"])
    result = pending.result(timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (3, "a\0b", "")


def test_start_capture_kills_what_does_not_finish() -> None:
    pending = process.start_capture(["sleep", "60"])
    with pytest.raises(process.Timeout):
        pending.result(timeout=0.2)


def test_start_capture_of_a_missing_program() -> None:
    with pytest.raises(FileNotFoundError):
        process.start_capture(["hutch-no-such-program"])



def _spawn_ready(script: str) -> int:
    """A python child running script, returned once it wrote its first byte."""
    read_end, write_end = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_CLOSE, read_end)]
    argv = [sys.executable, "-c", script]
    pid = os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions)
    os.close(write_end)
    assert os.read(read_end, 1) == b"x"
    os.close(read_end)
    return pid


def test_stop_child_ends_and_reaps_a_child_that_stops_on_sigterm() -> None:
    pid = _spawn_ready("import os, time; os.write(1, b'x'); time.sleep(60)")
    process.stop_child(pid, grace=60)
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(pid, os.WNOHANG)


def test_stop_child_kills_a_child_that_ignores_sigterm() -> None:
    # Without the SIGKILL after the grace period this test would never return.
    pid = _spawn_ready(
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "os.write(1, b'x'); time.sleep(60)"
    )
    process.stop_child(pid, grace=0.2)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_stop_child_of_a_child_already_reaped_does_nothing() -> None:
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], dict(os.environ))
    os.waitpid(pid, 0)
    process.stop_child(pid)
