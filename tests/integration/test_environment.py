"""Threat model 3 (secrets): no host variable enters unless named, and a
named value stays out of argv, --dry-run and the engine's container metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import Built, Engine, Hutch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engines]

CANARY = "HUTCH_CANARY_SECRET"
VALUE = "s3cr3t"
# What hutch itself sets (the agent's fixed variables included); nothing else may
# be added to the image's own environment.
HUTCH_FIXED = {"HOME", "USER", "LOGNAME", "SHELL", "HUTCH_SESSION", "HUTCH_GATE", "IS_SANDBOX",
               "DISABLE_AUTOUPDATER"}  # fmt: skip
# Allowlist mode (these tests' mode) adds the way to the egress proxy.
PROXY = {"HUTCH_PROXY_SOCKET", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
         "NO_PROXY", "no_proxy"}  # fmt: skip
# What Podman adds of its own (no host values among them).
PODMAN_OWN = {"container", "TERM", "HOSTNAME"}
# Podman would copy a host proxy variable in by itself (--http-proxy).
HOST_PROXY = "http://user:proxy-password@proxy.invalid:3128"


def canary_env(hutch: Hutch) -> dict[str, str]:
    return hutch.env(**{CANARY: VALUE, "HUTCH_CANARY_OTHER": "other-host-value",
                        "HTTP_PROXY": HOST_PROXY, "https_proxy": HOST_PROXY})  # fmt: skip


def test_host_variable_stays_out_unless_named(hutch: Hutch, project: Path) -> None:
    env = canary_env(hutch)
    result = hutch.run("-q", "exec", "--", "env", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout
    assert VALUE not in result.stdout
    assert "HUTCH_CANARY_OTHER" not in result.stdout
    assert "proxy-password" not in result.stdout
    # Positive control: naming it lets exactly that one in.
    result = hutch.run("-q", "exec", "--env", CANARY, "--", "env", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert f"{CANARY}={VALUE}" in result.stdout.splitlines()
    assert "HUTCH_CANARY_OTHER" not in result.stdout
    assert "proxy-password" not in result.stdout


def test_dry_run_names_but_never_prints_value(hutch: Hutch, project: Path) -> None:
    result = hutch.run(
        "exec", "--dry-run", "--env", CANARY, "--env", "HUTCH_SET_INLINE=inline-value",
        "--", "true", cwd=project, env=canary_env(hutch),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Named variables travel in the session's env file; --dry-run names them.
    assert f"{CANARY}=<redacted>" in result.stdout
    assert "HUTCH_SET_INLINE=<redacted>" in result.stdout
    assert f"--env {CANARY}" not in result.stdout
    for text in (result.stdout, result.stderr):
        assert VALUE not in text
        assert "inline-value" not in text
        assert "proxy-password" not in text


def _inspect_running(hutch: Hutch, project: Path, *flags: str) -> dict[str, object]:
    proc = hutch.popen("-q", "exec", *flags, "--", "sleep", "120", cwd=project,
                       env=canary_env(hutch))  # fmt: skip
    try:
        found = wait_for(lambda: hutch.engine.project_containers(project), 60,
                         "the session container")  # fmt: skip
        assert isinstance(found, list) and len(found) == 1
        return found[0]
    finally:
        proc.terminate()


def _env_names(engine: Engine, item: dict[str, object]) -> set[str]:
    names = {e.split("=", 1)[0] for e in item["Config"]["Env"]}  # type: ignore[index]
    assert names & PROXY == PROXY, names
    names -= PROXY
    if engine.podman:
        names -= PODMAN_OWN
    return names


def _image_env_names(engine: Engine, tag: str) -> set[str]:
    out = engine.cli("image", "inspect", "--format", "{{json .Config.Env}}", tag).stdout
    return {entry.split("=", 1)[0] for entry in json.loads(out)}


def test_engine_metadata_holds_only_named_variables(
    engine: Engine, hutch: Hutch, project: Path, built: Built
) -> None:
    image_names = _image_env_names(engine, built.tag)
    item = _inspect_running(hutch, project)
    assert _env_names(engine, item) == image_names | HUTCH_FIXED
    assert VALUE not in json.dumps(item)
    assert "proxy-password" not in json.dumps(item)

    item = _inspect_running(hutch, project, "--env", CANARY)
    # The value reaches the process environment (see the first test) through
    # the env file: neither its name nor its value is in the engine's metadata.
    assert _env_names(engine, item) == image_names | HUTCH_FIXED | {"HUTCH_ENV_FILE"}
    assert VALUE not in json.dumps(item)
    assert "proxy-password" not in json.dumps(item)
    assert VALUE not in json.dumps(item["Config"]["Cmd"])  # type: ignore[index]
    assert VALUE not in str(item["Name"])
