"""The egress proxy's life in one session: policy from config, socket, audit log.

Why the proxy lives in the hutch process: the sandbox runs with no network at
all (`--network none`), so the proxy's Unix socket is its only way out, and a
socket in a directory bind-mounted from the host needs no engine network, no
sidecar image and no second container start. hutch already stays in the
foreground for the whole session (to pass the exit status through and clean
up), so the proxy lives exactly as long as the sandbox does and dies with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hutch.errors import ConfigError, SetupFailed

if TYPE_CHECKING:
    from hutch.egress.audit import AuditMode
    from hutch.egress.listener import EgressProxy
    from hutch.egress.policy import Policy

# Package registries every agent needs to install tools while it works.
REGISTRIES = ("registry.npmjs.org", "pypi.org", "files.pythonhosted.org")
SOCKET_SUBDIR = "egress"
SOCKET_NAME = "egress.sock"
# The proxy's identity when hutch itself runs as root: `nobody`.
UNPRIVILEGED = 65534


def audit_path(state: str, session: str) -> Path:
    return Path(state, "audit", f"{session}.egress.jsonl")


def build_policy(mode: str, allow: tuple[str, ...], allow_private: tuple[str, ...]) -> Policy:
    """The session's policy: `allow` (the agent's hosts and the user's) plus the registries."""
    from hutch.egress.policy import Policy, system_resolver
    from hutch.egress.resolve import CachingResolver

    entries = tuple(dict.fromkeys(allow + REGISTRIES))
    resolver = CachingResolver(system_resolver)
    try:
        # mode is a str checked against NETWORK_MODES by the config schema.
        return Policy.from_config(mode, entries, allow_private, resolver=resolver)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(
            f"[network] allow: {err}",
            'entries are HOST[:PORT] or *.DOMAIN[:PORT], e.g. "api.github.com" or "*.example.org:8443"',
        ) from err


class SessionEgress:
    """Owns the proxy of one session, its socket directory and its audit log.

    As a normal user the proxy runs in a thread of hutch's own process: it has
    the user's rights and no capabilities. When hutch runs as root, the proxy
    runs in a forked child that has switched to `nobody` (no capabilities, no
    write access to anything of root's) before it parses a single byte; it
    keeps writing the audit file through a descriptor opened before the switch.
    """

    def __init__(
        self, policy: Policy, runtime_dir: Path, audit: Path, session: str, audit_mode: AuditMode = "required"
    ) -> None:
        self.policy = policy
        self.socket_dir = runtime_dir / SOCKET_SUBDIR
        self.audit = audit
        self.audit_mode: AuditMode = audit_mode
        self.session = session
        self._proxy: EgressProxy | None = None
        self._child: int | None = None

    @classmethod
    def prepare(
        cls,
        *,
        mode: str,
        allow: tuple[str, ...],
        allow_private: tuple[str, ...],
        runtime_dir: str,
        audit: Path,
        audit_mode: str,
        session: str,
    ) -> SessionEgress:
        """Check the allowlist and create the socket directory; `start()` serves it."""
        policy = build_policy(mode, allow, allow_private)
        # audit_mode is a str checked against AUDIT_MODES by the config schema.
        egress = cls(policy, Path(runtime_dir), audit, session, audit_mode)  # type: ignore[arg-type]
        egress.socket_dir.mkdir(mode=0o755 if os.geteuid() == 0 else 0o700)
        return egress

    @property
    def allow_count(self) -> int:
        return len(self.policy.entries)

    def start(self) -> None:
        """Start serving the socket. An audit file that cannot be written does not stop
        the session: the log says so and, in "required" mode, refuses connections."""
        from hutch.egress.audit import AuditLog
        from hutch.egress.listener import EgressProxy

        socket_path = self.socket_dir / SOCKET_NAME
        try:
            if os.geteuid() != 0:
                log = AuditLog(self.audit, self.session, mode=self.audit_mode)
                log.open()
                proxy = EgressProxy(self.policy, socket_path, log)
                proxy.start()
                self._proxy = proxy
                return
            from hutch import process

            os.chown(self.socket_dir, UNPRIVILEGED, UNPRIVILEGED)
            # Opened here, as root: `nobody` could not open it in hutch's state dir.
            fd: int | OSError
            try:
                self.audit.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                fd = err
            policy, audit, session, mode = self.policy, self.audit, self.session, self.audit_mode

            def serve() -> Callable[[], None]:
                log = AuditLog.from_fd(audit, fd, session, mode=mode)
                # The sandbox's UID 0 has no CAP_DAC_OVERRIDE: it reaches the
                # socket as "other". The runtime dir above is root's, mode 0700.
                # Relative: the child sits in the socket directory, as the
                # runtime dir on the way there is closed to `nobody`.
                child = EgressProxy(policy, Path(SOCKET_NAME), log, socket_mode=0o666)
                child.start()

                def stop() -> None:
                    child.stop()
                    log.close()  # writes the counts kept past the size cap

                return stop

            try:
                self._child = process.fork_unprivileged(
                    serve, UNPRIVILEGED, UNPRIVILEGED, str(self.socket_dir)
                )
            finally:
                if isinstance(fd, int):
                    os.close(fd)
        except OSError as err:
            raise SetupFailed(
                f"the egress proxy could not start: {err}",
                "check that the temporary directory is writable, or run with --network none",
            ) from err

    def finish(self) -> int:
        """Stop the proxy (it removes its socket); returns how many connections were denied."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy.audit.close()
            self._proxy = None
        if self._child is not None:
            from hutch import process

            process.stop_child(self._child)
            self._child = None
        return denied_count(self.audit)


def denied_count(path: Path) -> int:
    from hutch.egress.audit import read_events

    try:
        return sum(e.count for e in read_events(path) if e.decision == "deny")
    except OSError:
        return 0
