"""The session's egress from plain values: policy, socket directory, audit path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hutch.egress.session import REGISTRIES, SessionEgress, audit_path, build_policy
from hutch.errors import ConfigError


def test_policy_is_the_given_hosts_plus_the_registries() -> None:
    policy = build_policy("allowlist", ("api.example.com", "pypi.org", "*.example.org:8443"), ())
    texts = [entry.text for entry in policy.entries]
    # Given first, then the registries, each once.
    assert texts == [
        "api.example.com", "pypi.org", "*.example.org:8443", "registry.npmjs.org", "files.pythonhosted.org",
    ]  # fmt: skip
    # Control: without the registries nothing but the given hosts would be there.
    assert policy.decide("evil.example.net", 443).allowed is False


def test_a_bad_entry_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[network\] allow"):
        build_policy("allowlist", ("https://example.com/",), ())


def test_prepare_takes_plain_values_and_makes_a_private_socket_dir(tmp_path: Path) -> None:
    audit = audit_path(str(tmp_path / "state"), "s1")
    egress = SessionEgress.prepare(
        mode="allowlist",
        allow=("api.example.com",),
        allow_private=("db.internal:5432",),
        runtime_dir=str(tmp_path),
        audit=audit,
        audit_mode="best-effort",
        session="s1",
    )
    assert egress.socket_dir == tmp_path / "egress" and egress.socket_dir.is_dir()
    assert egress.audit == tmp_path / "state" / "audit" / "s1.egress.jsonl"
    assert egress.allow_count == 2 + len(REGISTRIES) and egress.audit_mode == "best-effort"
    assert any(entry.private for entry in egress.policy.entries)


def test_the_egress_package_does_not_import_the_session_or_the_agents() -> None:
    # No circle with the run path (workspace.py, sessions.py), no upward imports.
    probe = (
        "import sys, hutch.egress.session, hutch.egress.listener, hutch.egress.relay;"
        "print(' '.join(m for m in ('hutch.workspace', 'hutch.sessions', 'hutch.agents', "
        "'hutch.config', 'hutch.plan') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
