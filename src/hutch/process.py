"""The one place that starts subprocesses."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import FrameType

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Timeout(Exception):
    """A captured command did not finish in time."""


class Result(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def capture(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdin_text: str | None = None,
) -> Result:
    """Run to completion and capture both streams. FileNotFoundError if argv[0] is missing."""
    import subprocess

    try:
        completed = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            input=stdin_text,
            stdin=None if stdin_text is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise Timeout(f"{argv[0]} did not finish within {timeout}s") from err
    return Result(tuple(argv), completed.returncode, completed.stdout, completed.stderr)


class Pending:
    """A command started in the background (start_capture), its stdout read
    when result() is asked for. Spawned as the session is (posix_spawn): no
    subprocess import on the launch path."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = tuple(argv)
        read_fd, write_fd = os.pipe()  # both close on exec; dup2 makes a copy that does not
        try:
            self._pid = os.posix_spawnp(
                self.argv[0], list(self.argv), os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_fd, 1),
                              (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._fd = read_fd

    def result(self, timeout: float) -> Result:
        """Its exit status and stdout (stderr is not kept); Timeout, with the
        command killed, when it has not finished within timeout seconds."""
        import time

        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(self._pid, signal.SIGKILL)
                    os.waitpid(self._pid, 0)
                    raise Timeout(f"{self.argv[0]} did not finish within {timeout}s")
                if select.select([self._fd], [], [], left)[0]:
                    data = os.read(self._fd, 1 << 16)
                    if not data:
                        break
                    chunks.append(data)
        finally:
            os.close(self._fd)
        _, status = os.waitpid(self._pid, 0)
        out = b"".join(chunks).decode("utf-8", "surrogateescape")
        return Result(self.argv, os.waitstatus_to_exitcode(status), out, "")


def start_capture(argv: Sequence[str]) -> Pending:
    """A command started now and waited for later, so that its time overlaps
    other work. OSError (FileNotFoundError) if argv[0] cannot be run."""
    return Pending(argv)


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
) -> int:
    """Run with stdout and stderr merged, handing each line to on_line as it arrives."""
    import subprocess

    with subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait()


# How long a session has to end after hutch forwarded it a signal.
GRACE = 10.0


class Outcome(NamedTuple):
    """How a foreground session ended."""

    status: int
    signum: int | None  # the first signal received, if any
    killed: bool  # it outlived the grace period after that signal and was killed


def foreground(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    *,
    own_group: bool,
    on_signal: Callable[[int], None],
    grace: float = GRACE,
    on_started: Callable[[], None] | None = None,
) -> Outcome:
    """Run a session in the foreground, forwarding termination signals.

    own_group puts the child in its own process group, so that a terminal's
    Ctrl-C reaches hutch once and is forwarded once; with a terminal attached
    the child must stay in the foreground group to own the tty.
    Returns the exit status, the first signal received (or None) and whether
    the child was killed after the grace period. on_signal runs once,
    after the child is gone or grace seconds after the first signal if it is
    not, when a signal arrived (for cleanup). FileNotFoundError if argv[0] is
    missing.
    """
    # The child gets default SIGPIPE/SIGXFSZ, which Python ignores for itself;
    # the waiting (pidfd, signal forwarding, grace period) is _wait's.
    spawn_env = os.environ if env is None else env
    defaults = (signal.SIGPIPE, signal.SIGXFSZ)
    if own_group:
        pid = os.posix_spawnp(argv[0], list(argv), spawn_env, setpgroup=0, setsigdef=defaults)
    else:
        pid = os.posix_spawnp(argv[0], list(argv), spawn_env, setsigdef=defaults)
    if on_started is not None:
        try:
            on_started()
        except BaseException:
            # Nothing may run without what on_started sets up (the egress proxy).
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            on_signal(signal.SIGKILL)
            raise
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        status, cleaned = _wait(pid, received, grace, on_signal)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    first = received[0] if received else None
    if first is not None and not cleaned:
        on_signal(first)
    code = os.waitstatus_to_exitcode(status)
    return Outcome(128 - code if code < 0 else code, first, cleaned)


def _wait(
    pid: int, received: list[int], grace: float, on_signal: Callable[[int], None]
) -> tuple[int, bool]:
    """Wait for pid: (wait status, whether on_signal already ran).

    Sleeps in poll() on a pidfd (readable when the child exits) and on the
    signal wake-up pipe; once a signal was forwarded, the child has grace
    seconds to finish before hutch cleans up behind it and kills it.
    """
    import time

    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError:  # a kernel before 5.3: poll the child instead
        pidfd = None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    # The main thread's, as the handlers foreground just installed.
    previous_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    deadline: float | None = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            now = time.monotonic()
            if received and deadline is None:
                deadline = now + grace
            if deadline is not None and now >= deadline:
                # The engine client did not finish after the forwarded signal:
                # clean up behind it, then stop waiting for it.
                on_signal(received[0])
                os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1], True
            if pidfd is None:
                timeout: float | None = 50.0
            else:
                timeout = None if deadline is None else (deadline - now) * 1000 + 1
            poller.poll(timeout)
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
    finally:
        signal.set_wakeup_fd(previous_wake)
        for fd in (wake_r, wake_w, pidfd):
            if fd is not None:
                os.close(fd)


def fork_unprivileged(
    serve: Callable[[], Callable[[], None]],
    uid: int,
    gid: int,
    workdir: str,
    *,
    ready_timeout: float = 10.0,
) -> int:
    """Run a service in a forked child that gives up root before it starts.

    serve() runs in the child after setgroups/setgid/setuid (which clears every
    capability), starts the service and returns the function that stops it.
    The child enters workdir first, while it may still pass directories that
    only root can: serve() then names its files relative to it.
    The child stops on SIGTERM or when its parent dies; the parent gets the
    child's pid once the service is up. Forking (rather than starting a new
    interpreter) matters: the interpreter may live where the unprivileged user
    cannot read (a pyenv under /root), so everything is imported beforehand.
    """

    ready_r, ready_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(ready_r)
            for sig in (signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            os.chdir(workdir)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            stop = serve()
            os.write(ready_w, b"1")
            os.close(ready_w)
            while os.getppid() == parent:
                if signal.sigtimedwait({signal.SIGTERM}, 0.5) is not None:
                    break
            stop()
            status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    try:
        readable, _, _ = select.select([ready_r], [], [], ready_timeout)
        ready = bool(readable) and os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
    if not ready:
        stop_child(pid)
        raise OSError(f"the unprivileged service did not start within {ready_timeout:.0f}s")
    return pid


def stop_child(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after grace seconds; reaps the child.

    Waits on a pidfd, so the caller goes on the moment the child is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(grace * 1000):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    finally:
        os.close(pidfd)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
