"""README claims on a real engine, each with its negative control: the same
probe succeeding where the protection is absent, so that a block proves
something."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .support import Hutch, docker, wait_for

pytestmark = pytest.mark.integration

CANARY = "CANARY_c1a1m5"
BASE = "debian:bookworm-slim"  # the offline base image every engine has
# Another host user's identity, for probes of what others may see.
OTHER_UID, OTHER_GID = 1234, 4321


def sh(hutch: Hutch, project: Path, script: str, *flags: str,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return hutch.run("-q", "exec", *flags, "--", "sh", "-c", script, cwd=project, env=env)


# -- a project's hutch.toml cannot widen the sandbox untrusted -------------------------------


def test_untrusted_open_network_is_refused(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text('[network]\nmode = "open"\n')
    probe = "ls /sys/class/net | tr '\\n' ' '"
    refused = sh(hutch, project, probe)
    assert refused.returncode == 3, refused.stderr
    assert '[network] mode = "open"' in refused.stderr and "hutch config trust" in refused.stderr
    assert refused.stdout == ""
    # Control: the same file, trusted, gives the sandbox the engine's network.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    trusted = sh(hutch, project, probe)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.split() == ["eth0", "lo"], trusted.stdout


def test_untrusted_env_is_refused(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text('[sandbox]\nenv = ["HUTCH_CLAIM_TOKEN"]\n')
    env = hutch.env(HUTCH_CLAIM_TOKEN=CANARY)
    refused = sh(hutch, project, "printenv HUTCH_CLAIM_TOKEN", env=env)
    assert refused.returncode == 3, refused.stderr
    assert "[sandbox] env HUTCH_CLAIM_TOKEN" in refused.stderr
    assert "hutch config trust" in refused.stderr
    assert CANARY not in refused.stdout + refused.stderr
    # Control: once trusted, the named variable is let in.
    assert hutch.run("config", "trust", cwd=project).returncode == 0
    trusted = sh(hutch, project, "printenv HUTCH_CLAIM_TOKEN", env=env)
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout == f"{CANARY}\n"


# -- / and the home directory are no projects without --force -------------------------------

# A reserved mount target fails the next check after the project's: with
# --force, that error proves the project check let the run through (and
# nothing scans the whole machine to get there).
PAST_THE_CHECK = ("--mount", "/srv:/proc", "--dry-run")


@pytest.mark.parametrize("which", ["root", "home"])
def test_root_and_home_as_project_need_force(hutch: Hutch, project: Path, which: str) -> None:
    if which == "root":
        flags, env, refusal = ("--project", "/"), hutch.env(), "refusing to use / as the project"
    else:
        flags, env, refusal = (), hutch.env(HOME=str(project)), "refusing to use your home directory"
    refused = hutch.run(*flags, "exec", *PAST_THE_CHECK, "--", "true", cwd=project, env=env)
    assert refused.returncode == 2, refused.stderr
    assert refusal in refused.stderr and "--force" in refused.stderr
    assert "cannot be a mount target" not in refused.stderr
    forced = hutch.run(*flags, "exec", "--force", *PAST_THE_CHECK, "--", "true", cwd=project, env=env)
    assert forced.returncode == 2, forced.stderr
    assert refusal not in forced.stderr
    assert "mount '/srv:/proc': /proc cannot be a mount target" in forced.stderr


# -- the runtime dir --------------------------------------------------------------------------


def _as_other_user(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_GID}", "--clear-groups",
                           "--", *argv], capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_runtime_dir_is_private(hutch: Hutch, project: Path) -> None:
    assert os.getuid() == 0, "the probe as another user needs root (as in CI)"
    proc = hutch.popen("-q", "exec", "--", "sleep", "120", cwd=project)
    try:
        found = wait_for(lambda: hutch.engine.project_containers(project), 60, "the session container")
        assert isinstance(found, list) and len(found) == 1
        session = found[0]["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
        runtime = hutch.runtime_base / f"hutch-{hutch.engine.uid}-{session}"
        st = runtime.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == hutch.engine.uid
        # The proxy's socket dir, and the start gate's socket until the sandbox passed it.
        assert {p.name for p in runtime.iterdir()} - {"gate.sock"} == {"egress"}
        denied = _as_other_user("ls", str(runtime))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        # Control: the same user lists a directory with the usual mode (where it
        # can reach one: the runtime dir's own directory is 0700 too).
        control = Path(tempfile.mkdtemp(dir=hutch.root, prefix="hutch-claim-"))
        try:
            (control / "visible").touch()
            control.chmod(0o755)
            listed = _as_other_user("ls", str(control))
            assert listed.returncode == 0 and listed.stdout == "visible\n", listed.stderr
        finally:
            (control / "visible").unlink()
            control.rmdir()
    finally:
        proc.terminate()
    assert not runtime.exists(), "the runtime dir goes with the session"


# -- the host's /proc --------------------------------------------------------------------------

CMDLINES = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\"; echo; done"


def test_host_processes_are_not_visible(hutch: Hutch, project: Path) -> None:
    marker = f"hutch-proc-marker-{secrets.token_hex(4)}"
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    try:
        inside = sh(hutch, project, CMDLINES, "--network", "none")
        assert inside.returncode == 0, inside.stderr
        assert "for f in /proc/" in inside.stdout  # the probe saw its own shell
        assert marker not in inside.stdout
        # Control: a container given the host's /proc sees the host's process.
        control = docker("run", "--rm", "--network", "none", "-v", "/proc:/hostproc:ro", BASE, "sh", "-c",
                         CMDLINES.replace("/proc/", "/hostproc/"))  # fmt: skip
        assert control.returncode == 0, control.stderr
        assert marker in control.stdout
    finally:
        host.kill()
        host.wait()


# -- secrets and warnings ------------------------------------------------------------------------


def _git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True)


def test_git_ignored_secret_files_are_masked(hutch: Hutch, project: Path) -> None:
    _git(project, "init", "-q")
    (project / ".gitignore").write_text(".env\nkeys/\n")
    (project / ".env").write_text(f"TOKEN={CANARY}\n")
    (project / "keys").mkdir()
    (project / "keys" / "id_ed25519").write_text(CANARY)
    # The premise: git ignores both.
    ignored = _git(project, "check-ignore", ".env", "keys/id_ed25519").stdout.split()
    assert ignored == [".env", "keys/id_ed25519"]
    script = "cat .env keys/id_ed25519; echo END"
    masked = sh(hutch, project, script, "--network", "none")
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout == "END\n"
    # Control: without masking the same files are readable.
    control = sh(hutch, project, script, "--network", "none", "--no-mask")
    assert control.stdout == f"TOKEN={CANARY}\n{CANARY}END\n", control.stderr


def test_no_mask_and_hard_link_warnings_are_printed(hutch: Hutch, project: Path) -> None:
    (project / "plain.txt").write_text("plain")
    control = sh(hutch, project, "true", "--network", "none")
    assert control.returncode == 0 and "warning" not in control.stderr, control.stderr
    no_mask = sh(hutch, project, "true", "--network", "none", "--no-mask")
    assert "warning: --no-mask: secret files in the project are visible to the agent" in no_mask.stderr
    # A file hard-linked from outside the project: writing it writes the other copy.
    outside = hutch.root / "outside.txt"
    outside.write_text("shared")
    os.link(outside, project / "linked.txt")
    linked = sh(hutch, project, "true", "--network", "none")
    assert ("warning: 1 file(s) are hard-linked from outside the project; the agent can change "
            "the other copies too: linked.txt") in linked.stderr  # fmt: skip


# -- resource limits -------------------------------------------------------------------------------

CGROUP_V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
if CGROUP_V2:
    LIMITS = "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max"
else:
    LIMITS = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
              "/sys/fs/cgroup/cpu/cpu.cfs_period_us")  # fmt: skip


def _limits(text: str) -> tuple[int | None, float | None]:
    """(memory bytes, CPUs) from LIMITS' output; None where unlimited."""
    memory, quota, period = text.split()
    quota = "max" if quota == "-1" else quota  # cgroup v1 says -1
    mem = None if memory == "max" or int(memory) >= 2**62 else int(memory)
    return mem, None if quota == "max" else int(quota) / int(period)


def test_docker_memory_and_cpu_limits_hold_inside(hutch: Hutch, project: Path) -> None:
    limited = sh(hutch, project, LIMITS, "--network", "none", "--memory", "256m", "--cpus", "0.5")
    assert limited.returncode == 0, limited.stderr
    assert _limits(limited.stdout) == (256 * 2**20, 0.5)
    default = sh(hutch, project, LIMITS, "--network", "none")
    assert _limits(default.stdout) == (8 * 2**30, float(os.cpu_count() or 1))
    # Control: a bare container of the same engine has neither limit.
    bare = docker("run", "--rm", "--network", "none", BASE, "sh", "-c", LIMITS)
    assert bare.returncode == 0, bare.stderr
    assert _limits(bare.stdout) == (None, None)
