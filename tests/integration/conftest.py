"""Integration fixtures: build the image once per engine, isolate every hutch
user, clean up by label.

The guarantee tests run on every engine flavour: a test (or module) marked
`engines` gets the `engine` fixture parametrised over ENGINES (or the ids the
marker names); every other test runs on Docker only. `hutch`, `project` and
`built` follow `engine`. The images are built once per session and engine.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import (
    BUILD_TIMEOUT,
    DOCKER,
    REPO_ROOT,
    Built,
    Engine,
    HostUser,
    Hutch,
    docker_reason,
    seed_pins,
)  # fmt: skip

ENGINES = ("docker", "podman", "podman-rootless")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engines(*ids): run on these engine flavours (all of "
        f"{', '.join(ENGINES)} when none is named); unmarked tests run on Docker only",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is None or "engine" not in metafunc.fixturenames:
        return
    ids = marker.args or ENGINES
    unknown = set(ids) - set(ENGINES)
    assert not unknown, f"unknown engine ids {sorted(unknown)} (known: {ENGINES})"
    metafunc.parametrize("engine", ids, indirect=True)


# -- session fixtures ----------------------------------------------------------


@pytest.fixture(scope="session")
def it_root() -> Iterator[Path]:
    """The session's directory. Outside pytest's 0700 basetemp, so that the
    non-root test users can reach their own projects below it."""
    root = Path(tempfile.mkdtemp(prefix="hutch-it-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine() -> Engine:
    reason = docker_reason()
    if reason is not None:
        pytest.skip(f"no usable Docker engine: {reason}")
    return DOCKER


def _require_podman() -> None:
    # A missing Podman fails, never skips: every engine is part of the contract.
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (.ci/run installs it)", pytrace=False)
    if os.getuid() != 0:
        pytest.fail("the Podman tests run rootful Podman and create a user: run them as root",
                    pytrace=False)  # fmt: skip


@pytest.fixture(scope="session")
def podman_engine() -> Engine:
    _require_podman()
    engine = Engine("podman", "podman", 0, 0, env={"HUTCH_ENGINE": "podman"})
    _import_base(engine)
    _check_podman(engine)
    return engine


@pytest.fixture(scope="session")
def podman_rootless_engine() -> Engine:
    _require_podman()
    _ensure_rootless_user()
    venv = _install_hutch()  # shared with the Docker non-root user; readable by all
    engine = Engine(
        "podman-rootless", "podman", POD_UID, POD_UID, user=POD_USER, user_home=POD_HOME,
        binary=str(venv / "bin" / "hutch"),
        env={"HUTCH_ENGINE": "podman", "XDG_RUNTIME_DIR": RUNTIME_DIR},
        runtime_base=Path(RUNTIME_DIR),
    )  # fmt: skip
    _import_base(engine)
    _check_podman(engine)
    return engine


def _build(engine: Engine, root: Path) -> Built:
    """`hutch build` once on this engine; the image is then reused by every test."""
    shared = new_hutch(engine, root)
    project = shared.root / "proj"
    project.mkdir()
    shared.own(project)
    result = shared.run("build", cwd=project, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("hutch-claude:"), result.stdout
    pins = shared.state / "hutch" / "versions.json"
    assert pins.is_file(), "hutch build wrote no agent pin"
    assert engine.cli("image", "inspect", tag).returncode == 0
    return Built(tag, pins, shared)


def _engine_root(it_root: Path, engine: Engine) -> Path:
    root = it_root / engine.id
    root.mkdir()
    root.chmod(0o755)
    return root


def _built_under(engine: Engine, root: Path) -> Iterator[Built]:
    """The engine's shared build under root; its containers under root go at the end."""
    try:
        yield _build(engine, root / "shared")
    finally:
        engine.remove_under(root)


@pytest.fixture(scope="session")
def docker_built(docker_engine: Engine, it_root: Path) -> Iterator[Built]:
    # Every test's containers, Docker-only tests' included, live under it_root.
    yield from _built_under(docker_engine, it_root)


@pytest.fixture(scope="session")
def podman_built(podman_engine: Engine, it_root: Path) -> Iterator[Built]:
    yield from _built_under(podman_engine, _engine_root(it_root, podman_engine))


@pytest.fixture(scope="session")
def podman_rootless_built(podman_rootless_engine: Engine, it_root: Path) -> Iterator[Built]:
    yield from _built_under(podman_rootless_engine, _engine_root(it_root, podman_rootless_engine))


def _fixture_name(engine_id: str) -> str:
    return engine_id.replace("-", "_")


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Engine:
    """The engine flavour this test runs on (Docker unless marked `engines`)."""
    engine_id = getattr(request, "param", "docker")
    found = request.getfixturevalue(f"{_fixture_name(engine_id)}_engine")
    assert isinstance(found, Engine)
    return found


@pytest.fixture
def built(engine: Engine, request: pytest.FixtureRequest) -> Built:
    """The session's agent image on this test's engine (built on first use)."""
    found = request.getfixturevalue(f"{_fixture_name(engine.id)}_built")
    assert isinstance(found, Built)
    return found


def new_hutch(engine: Engine, root: Path) -> Hutch:
    """A hutch user with its HOME and XDG dirs under root, on this engine."""
    owner = (engine.uid, engine.gid) if engine.user is not None else None
    h = Hutch(root, binary=engine.binary, user=engine.user, extra_env=dict(engine.env),
              engine=engine, owner=owner)  # fmt: skip
    h.make_dirs()
    if engine.rootless:
        # The user's storage, where their XDG_CONFIG_HOME says (a moved
        # XDG_DATA_HOME would otherwise move it, and Podman 4.3 ignores
        # graphroot under CONTAINERS_STORAGE_CONF then).
        conf = h.config / "containers" / "storage.conf"
        conf.parent.mkdir(parents=True)
        conf.write_text(STORAGE_CONF)
    h.own(root)
    return h


@pytest.fixture
def hutch(engine: Engine, built: Built, it_root: Path, request: pytest.FixtureRequest) -> Hutch:
    """A fresh hutch user (HOME, XDG dirs) that finds the built image by tag."""
    parent = it_root if engine.id == "docker" else it_root / engine.id
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=parent))
    root.chmod(0o755)
    h = new_hutch(engine, root)
    seed_pins(h, built)
    h.own(h.state)
    return h


@pytest.fixture
def project(hutch: Hutch) -> Path:
    path = hutch.root / "proj"
    path.mkdir()
    hutch.own(path)
    return path


# -- Podman: rootful as root, rootless as hutch-pod with subordinate IDs ----------

POD_USER = "hutch-pod"
POD_UID = 2345
POD_HOME = Path("/home/hutch-pod")
SUBID_COUNT = 65536
RUNTIME_DIR = f"/run/user/{POD_UID}"
# Debian's Podman 4.3 would fall back to vfs: a full image copy per launch.
STORAGE_CONF = f"""[storage]
driver = "overlay"
graphroot = "{POD_HOME}/.local/share/containers/storage"
runroot = "{RUNTIME_DIR}/containers"
"""


def _subid_entry(path: Path, name: str) -> bool:
    return any(line.split(":")[0] == name for line in path.read_text().splitlines())


def _next_free_subid(path: Path) -> int:
    ends = [int(f[1]) + int(f[2]) for f in (line.split(":") for line in path.read_text().splitlines())
            if len(f) == 3 and f[1].isdigit() and f[2].isdigit()]  # fmt: skip
    return max([100000, *ends])


def _ensure_rootless_user() -> None:
    """hutch-pod (2345:2345) with a home, subordinate ID ranges and the overlay driver."""
    try:
        entry = pwd.getpwnam(POD_USER)
    except KeyError:
        subprocess.run(["groupadd", "-g", str(POD_UID), POD_USER], check=False)
        subprocess.run(["useradd", "-u", str(POD_UID), "-g", str(POD_UID), "-m", "-d", str(POD_HOME),
                        "-s", "/bin/sh", POD_USER], check=True)  # fmt: skip
        entry = pwd.getpwnam(POD_USER)
    assert (entry.pw_uid, entry.pw_gid) == (POD_UID, POD_UID), entry
    for kind, path in (("uids", Path("/etc/subuid")), ("gids", Path("/etc/subgid"))):
        path.touch(exist_ok=True)
        if not _subid_entry(path, POD_USER):
            start = _next_free_subid(path)
            subprocess.run(["usermod", f"--add-sub{kind}", f"{start}-{start + SUBID_COUNT - 1}",
                            POD_USER], check=True)  # fmt: skip
    runtime = Path(RUNTIME_DIR)
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, POD_UID, POD_UID)
    runtime.chmod(0o700)
    conf = POD_HOME / ".config" / "containers" / "storage.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(STORAGE_CONF)
    # Only what was made here: the home also holds the user's image storage.
    for path in (conf.parent.parent, conf.parent, conf):
        os.chown(path, POD_UID, POD_UID, follow_symlinks=False)
    tun = Path("/dev/net/tun")
    assert tun.exists() and os.stat(tun).st_mode & 0o006 == 0o006, (
        "rootless Podman's network (slirp4netns) needs /dev/net/tun usable by all "
        "(crw-rw-rw-, as Debian makes it); .ci/run sets it up"
    )


def _import_base(engine: Engine) -> None:
    """The offline base image, into this flavour's own storage."""
    plain = {"HUTCH_CI_ENGINE": "podman", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    env = {**plain, **engine.env, "HOME": str(engine.user_home or "/root")}
    argv = ["bash", str(REPO_ROOT / ".ci" / "base-image.sh"), "debian:bookworm-slim"]
    if engine.user is not None:
        # As root first (into rootful storage): only root can debootstrap the
        # shared tarball when it is missing; the user then reads it.
        first = subprocess.run(argv, env=plain, capture_output=True, text=True,
                               timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
        assert first.returncode == 0, first.stdout + first.stderr
        argv = ["runuser", "-u", engine.user, "--", "env", "-i",
                *[f"{k}={v}" for k, v in env.items()], *argv]  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                            check=False, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _check_podman(engine: Engine) -> None:
    info = engine.cli("info", "--format", "{{.Host.Security.Rootless}} {{.Store.GraphDriverName}}")
    assert info.stdout.split() == [str(engine.rootless).lower(), "overlay"], info.stderr


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
            f"#!{venv / 'bin' / 'python'}\nfrom hutch.cli import entry\nentry()\n"
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
def host_user(docker_engine: Engine) -> HostUser:
    name = _ensure_host_user()
    return HostUser(name, IT_UID, IT_GID, _install_hutch())


@pytest.fixture
def user_hutch(host_user: HostUser, docker_built: Built, it_root: Path,
               request: pytest.FixtureRequest) -> Hutch:  # fmt: skip
    """hutch on Docker as the non-root host user, with a HOME and XDG dirs it owns."""
    root = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=it_root))
    root.chmod(0o755)
    h = Hutch(root, binary=str(host_user.venv / "bin" / "hutch"), user=host_user.name,
              owner=(host_user.uid, host_user.gid))  # fmt: skip
    h.make_dirs()
    seed_pins(h, docker_built)
    h.own(root)
    return h
