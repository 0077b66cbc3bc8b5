"""Integration fixtures: build the image once, isolate every hutch user, clean up by label."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import (
    BUILD_TIMEOUT,
    REPO_ROOT,
    Built,
    HostUser,
    Hutch,
    containers_under,
    docker,
    docker_reason,
    seed_pins,
)  # fmt: skip

# -- session fixtures ----------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> None:
    reason = docker_reason()
    if reason is not None:
        pytest.skip(f"no usable Docker engine: {reason}")


@pytest.fixture(scope="session")
def it_root(docker_engine: None) -> Iterator[Path]:
    """The session's directory. Outside pytest's 0700 basetemp, so that the
    non-root test user can reach its own project below it."""
    root = Path(tempfile.mkdtemp(prefix="hutch-it-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        leftovers = [str(c["Id"]) for c in containers_under(root)]
        if leftovers:
            docker("rm", "-f", *leftovers, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def built(it_root: Path) -> Built:
    """`hutch build` once; the image is then reused by every test."""
    shared = Hutch(it_root / "shared")
    shared.make_dirs()
    project = it_root / "shared" / "proj"
    project.mkdir()
    result = shared.run("build", cwd=project, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("hutch-claude:"), result.stdout
    pins = shared.state / "hutch" / "versions.json"
    assert pins.is_file(), "hutch build wrote no agent pin"
    assert docker("image", "inspect", tag).returncode == 0
    return Built(tag, pins, shared)


@pytest.fixture
def hutch(built: Built, it_root: Path, request: pytest.FixtureRequest) -> Hutch:
    """A fresh hutch user (HOME, XDG dirs) that finds the built image by tag."""
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=it_root))
    root.chmod(0o755)
    h = Hutch(root)
    h.make_dirs()
    seed_pins(h, built)
    return h


@pytest.fixture
def project(hutch: Hutch) -> Path:
    path = hutch.root / "proj"
    path.mkdir()
    return path


# -- a non-root host user with an unusual UID/GID ----------------------------------

IT_USER = "hutch-it"
IT_GROUP = "hutch-it-grp"
IT_UID = 1234
IT_GID = 4321
IT_VENV_ROOT = Path("/opt/hutch-it")


def _ensure_host_user() -> str:
    import grp
    import pwd

    try:
        grp.getgrgid(IT_GID)
    except KeyError:
        # check=False: a concurrent test session may have just added it.
        subprocess.run(["groupadd", "-g", str(IT_GID), IT_GROUP], check=False)
    try:
        pwd.getpwuid(IT_UID)
    except KeyError:
        subprocess.run(
            ["useradd", "-u", str(IT_UID), "-g", str(IT_GID), "-M",
             "-d", "/nonexistent", "-s", "/bin/sh", IT_USER],
            check=False,
        )  # fmt: skip
    entry = pwd.getpwuid(IT_UID)
    name = entry.pw_name
    assert entry.pw_gid == IT_GID, f"host user {name} exists with primary gid {entry.pw_gid}"
    # Whatever group owns the engine socket, the user needs it (as a docker user would).
    sock = "/var/run/docker.sock"
    if os.path.exists(sock):
        sock_group = grp.getgrgid(os.stat(sock).st_gid).gr_name
        if name not in grp.getgrnam(sock_group).gr_mem:
            subprocess.run(["usermod", "-aG", sock_group, name], check=True)
    return name


def _source_digest() -> str:
    h = hashlib.sha256()
    src = REPO_ROOT / "src" / "hutch"
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _install_hutch() -> Path:
    """Install this checkout for a user who cannot read the test runner's Python.

    Debian's own python3 makes the venv; the package is copied in the way pip
    lays out a pure-Python package, so no build backend or network is needed.
    One venv per source digest, created under a temporary name and renamed:
    concurrent test sessions never see each other's half-built install.
    """
    venv = IT_VENV_ROOT / _source_digest()
    if (venv / "bin" / "hutch").exists():
        return venv
    python = Path("/usr/bin/python3")
    assert python.exists(), "the non-root test needs the system python3 (/usr/bin/python3)"
    IT_VENV_ROOT.mkdir(parents=True, exist_ok=True)
    IT_VENV_ROOT.chmod(0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f"{venv.name}.tmp-", dir=IT_VENV_ROOT))
    try:
        subprocess.run([str(python), "-m", "venv", "--without-pip", "--clear", str(tmp)], check=True)
        site = subprocess.run(
            [str(tmp / "bin" / "python"), "-c",
             "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        shutil.copytree(
            REPO_ROOT / "src" / "hutch",
            Path(site) / "hutch",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        script = tmp / "bin" / "hutch"
        # The venv's python is a link to /usr/bin/python3, so it works from its final name.
        script.write_text(
            f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom hutch.cli import main\nsys.exit(main())\n"
        )
        script.chmod(0o755)
        for dirpath, _dirnames, filenames in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                path = os.path.join(dirpath, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | 0o444)
        try:
            tmp.rename(venv)
        except OSError:
            if not (venv / "bin" / "hutch").exists():  # not a concurrent session's win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return venv


@pytest.fixture(scope="session")
def host_user(docker_engine: None) -> HostUser:
    name = _ensure_host_user()
    return HostUser(name, IT_UID, IT_GID, _install_hutch())


@pytest.fixture
def user_hutch(host_user: HostUser, built: Built, it_root: Path,
               request: pytest.FixtureRequest) -> Hutch:  # fmt: skip
    """hutch run as the non-root host user, with a HOME and XDG dirs it owns."""
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=it_root))
    root.chmod(0o755)
    h = Hutch(root, binary=str(host_user.venv / "bin" / "hutch"), user=host_user.name)
    h.make_dirs()
    seed_pins(h, built)
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, host_user.uid, host_user.gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), host_user.uid, host_user.gid)
    return h
