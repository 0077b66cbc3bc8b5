"""The egress proxy's life in one session: policy from config, socket, audit log.

Why the proxy lives in the hutch process: the sandbox runs with no network at
all (`--network none`), so the proxy's Unix socket is its only way out, and a
socket in a directory bind-mounted from the host needs no engine network, no
sidecar image and no second container start. hutch already stays in the
foreground for the whole session (to pass the exit status through and clean
up), so the proxy lives exactly as long as the sandbox does and dies with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hutch.agents import AgentDef
from hutch.errors import ConfigError, SetupFailed

if TYPE_CHECKING:
    from hutch.egress.policy import Policy
    from hutch.egress.proxy import EgressProxy
    from hutch.session import Workspace

# Package registries every agent needs to install tools while it works.
REGISTRIES = ("registry.npmjs.org", "pypi.org", "files.pythonhosted.org")
SOCKET_NAME = "egress.sock"


def audit_path(state: Path, session: str) -> Path:
    return state / "audit" / f"{session}.egress.jsonl"


def build_policy(
    mode: str, agent: AgentDef, allow: tuple[str, ...], allow_private: tuple[str, ...]
) -> Policy:
    from hutch.egress.policy import Policy

    entries = tuple(dict.fromkeys(agent.allow + REGISTRIES + allow))
    try:
        return Policy.from_config(mode, entries, allow_private)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(
            f"[network] allow: {err}",
            'entries are HOST[:PORT] or *.DOMAIN[:PORT], e.g. "api.github.com" or "*.example.org:8443"',
        ) from err


class SessionEgress:
    """Owns the socket directory, the proxy thread and the audit log of one session."""

    def __init__(self, policy: Policy, socket_dir: str, audit: Path, session: str) -> None:
        self.policy = policy
        self.socket_dir = socket_dir
        self.audit = audit
        self.session = session
        self._proxy: EgressProxy | None = None

    @classmethod
    def prepare(
        cls, ws: Workspace, agent: AgentDef, session: str, runtime_dir: Path
    ) -> SessionEgress:
        s = ws.settings
        policy = build_policy(s.network_mode, agent, s.allow, s.allow_private)
        return cls(policy, str(runtime_dir), audit_path(ws.dirs.state, session), session)

    @property
    def allow_count(self) -> int:
        return len(self.policy.entries)

    def start(self) -> None:
        from hutch.egress.audit import AuditLog
        from hutch.egress.proxy import EgressProxy

        self.audit.parent.mkdir(parents=True, exist_ok=True)
        proxy = EgressProxy(
            self.policy, Path(self.socket_dir) / SOCKET_NAME, AuditLog(self.audit, self.session)
        )
        try:
            proxy.start()
        except OSError as err:
            raise SetupFailed(
                f"the egress proxy could not start: {err}",
                "check that the temporary directory is writable, or run with --network none",
            ) from err
        self._proxy = proxy

    def finish(self) -> int:
        """Stop the proxy (it removes its socket); returns how many connections were denied."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy.audit.close()
            self._proxy = None
        return denied_count(self.audit)


def denied_count(path: Path) -> int:
    from hutch.egress.audit import AuditReadError, read_events

    try:
        return sum(1 for e in read_events(path) if e.decision == "deny")
    except (OSError, AuditReadError):
        return 0
