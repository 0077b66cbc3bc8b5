"""Threat model 1 (identity): the host user's UID/GID from the first
instruction, no capabilities, no-new-privileges, no setuid, no sudo, no chown.

On every engine: Docker and rootful Podman with hutch as root, rootless Podman
with hutch as an unprivileged user (keep-id maps it to itself inside)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .support import Built, Engine, HostUser, Hutch

pytestmark = pytest.mark.integration

PROBE = r"""
echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"
echo "passwd=$(getent passwd "$(id -u)")"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | tr -d '\t '
echo "setuid=[$(find / -xdev -perm /6000 -type f 2>/dev/null)]"
if command -v sudo >/dev/null 2>&1; then echo sudo=present; else echo sudo=absent; fi
"""


def probe(hutch: Hutch, project: Path) -> dict[str, str]:
    result = hutch.run("-q", "exec", "--", "sh", "-c", PROBE, cwd=project)
    assert result.returncode == 0, result.stderr
    facts = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=") if "=" in line else line.partition(":")
        assert sep, f"unexpected probe line {line!r}"
        facts[key] = value
    return facts


@pytest.mark.engines
def test_identity_as_host_user(engine: Engine, hutch: Hutch, project: Path) -> None:
    facts = probe(hutch, project)
    uid, gid = engine.uid, engine.gid
    assert facts["uid"] == str(uid)
    assert facts["gid"] == str(gid)
    # Only the primary group: the host's supplementary groups (docker!) stay out.
    assert facts["groups"] == str(gid)
    fields = facts["passwd"].split(":")
    assert fields[2:4] == [str(uid), str(gid)], facts["passwd"]
    assert fields[5] == "/home/hutch", facts["passwd"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(facts[cap], 16) == 0, f"{cap}={facts[cap]}"
    assert facts["NoNewPrivs"] == "1"
    assert facts["setuid"] == "[]"
    assert facts["sudo"] == "absent"


@pytest.mark.engines
def test_image_has_no_setuid_files(engine: Engine, built: Built) -> None:
    # The in-sandbox scan above runs without CAP_DAC_READ_SEARCH, so it cannot
    # look into every directory: scan the image once as a fully privileged root
    # (of the user namespace, on rootless Podman).
    # Podman would raise rlimits beyond what root may here (see engines/podman.py):
    # pinned low, which is always allowed.
    ulimits = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024") if engine.podman else ()
    result = engine.cli(
        "run", "--rm", "--network", "none", *ulimits, "--entrypoint", "find", built.tag,
        "/", "-xdev", "-perm", "/6000", "-type", "f",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


OWNERSHIP_PROBE = r"""
touch newfile && mkdir newdir && touch newdir/inner && touch "$HOME/home-file"
if echo tamper >> other.txt 2>/dev/null; then echo other=WRITTEN; else echo other=denied; fi
"""


@pytest.mark.engines
def test_files_created_belong_to_the_host_user(engine: Engine, hutch: Hutch, project: Path) -> None:
    if os.getuid() != 0:
        pytest.fail("this test needs the test runner to be root (as in CI)")
    other = project / "other.txt"  # another user's file that must stay untouched
    other.write_text("other\n")
    os.chown(other, 4242, 4242)
    other.chmod(0o644)
    result = hutch.run("-q", "exec", "--", "sh", "-c", OWNERSHIP_PROBE, cwd=project)
    assert result.returncode == 0, result.stderr
    # Even root inside (hutch as root) lacks CAP_DAC_OVERRIDE.
    assert result.stdout == "other=denied\n"
    owner = (engine.uid, engine.gid)
    for created in ("newfile", "newdir", "newdir/inner"):
        st = (project / created).lstat()
        assert (st.st_uid, st.st_gid) == owner, created
    st = other.lstat()
    assert (st.st_uid, st.st_gid, other.read_text()) == (4242, 4242, "other\n")
    home_file = (hutch.agent_home(project) / "home-file").lstat()
    assert (home_file.st_uid, home_file.st_gid) == owner


NONROOT_PROBE = r"""
echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"
echo "passwd=$(getent passwd 1234)"
echo "home=$HOME"
touch newfile && mkdir d && touch d/inner && touch "$HOME/home-file"
if echo tamper >> other.txt 2>/dev/null; then echo other=WRITTEN; else echo other=denied; fi
echo "mine=$(cat mine.txt)"
"""


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, int, int, bytes]]:
    return {
        p: (p.lstat().st_uid, p.lstat().st_gid, stat.S_IMODE(p.lstat().st_mode), p.read_bytes()
            if p.is_file() else b"")
        for p in paths
    }  # fmt: skip


def test_identity_as_unusual_non_root_user(user_hutch: Hutch, host_user: HostUser) -> None:
    # Docker's own case: a non-root host user in the docker group. On Podman the
    # non-root user is the rootless flavour of the tests above.
    uid, gid = host_user.uid, host_user.gid
    project = user_hutch.root / "proj"
    project.mkdir()
    os.chown(project, uid, gid)
    project.chmod(0o750)
    mine = project / "mine.txt"
    mine.write_text("mine\n")
    os.chown(mine, uid, gid)
    mine.chmod(0o640)
    script = project / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chown(script, uid, gid)
    script.chmod(0o755)
    other = project / "other.txt"  # another user's file that must stay untouched
    other.write_text("other\n")
    os.chown(other, 4242, 4242)
    other.chmod(0o644)
    before = _snapshot([project, mine, script, other])

    result = user_hutch.run("-q", "exec", "--", "sh", "-c", NONROOT_PROBE, cwd=project)
    assert result.returncode == 0, result.stderr
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert facts["uid"] == str(uid)
    assert facts["gid"] == str(gid)
    assert facts["groups"] == str(gid)  # not the host's docker group
    fields = facts["passwd"].split(":")
    assert fields[0] == host_user.name
    assert fields[2:4] == [str(uid), str(gid)]
    assert fields[5] == "/home/hutch"
    assert facts["home"] == "/home/hutch"
    assert facts["other"] == "denied"
    assert facts["mine"] == "mine"

    for created in ("newfile", "d", "d/inner"):
        st = (project / created).lstat()
        assert (st.st_uid, st.st_gid) == (uid, gid), created
    # hutch never chowns or chmods what was there before.
    assert _snapshot([project, mine, script, other]) == before

    agent_home = user_hutch.agent_home(project)
    st = agent_home.stat()
    assert (st.st_uid, st.st_gid) == (uid, gid)
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
    home_file = (agent_home / "home-file").stat()
    assert (home_file.st_uid, home_file.st_gid) == (uid, gid)
