"""Bad input gets the documented exit code and a message that says what to do,
never a traceback (the helper asserts that on every call)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import Built, Hutch, docker, seed_pins

pytestmark = pytest.mark.integration


def exec_true(hutch: Hutch, project: Path, *flags: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return hutch.run(*flags, "exec", "--", "true", cwd=project, env=env)


def test_toml_syntax_error(hutch: Hutch, project: Path) -> None:
    config = project / "hutch.toml"
    config.write_text('version = 1\n[sandbox]\nmemory "4g"\n')
    result = exec_true(hutch, project)
    assert result.returncode == 3, result.stderr
    assert str(config) in result.stderr
    assert "line 3" in result.stderr
    assert "hint:" in result.stderr


def test_unknown_key(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text('version = 1\n[network]\nalow = ["example.org"]\n')
    result = exec_true(hutch, project)
    assert result.returncode == 3, result.stderr
    assert "alow" in result.stderr
    assert "allow" in result.stderr  # the suggestion


def test_wrong_type(hutch: Hutch, project: Path) -> None:
    (project / "hutch.toml").write_text("version = 1\n[sandbox]\nmemory = 5\n")
    result = exec_true(hutch, project)
    assert result.returncode == 3, result.stderr
    assert "memory" in result.stderr


def test_home_as_project_refused(hutch: Hutch, project: Path) -> None:
    result = exec_true(hutch, project, env=hutch.env(HOME=str(project)))
    assert result.returncode == 2, result.stderr
    assert "--force" in result.stderr
    assert "home directory" in result.stderr


def only_docker_on_path(hutch: Hutch) -> str:
    """A PATH with the docker client and nothing else (no podman, whatever the host has)."""
    found = shutil.which("docker")
    assert found, "docker must be on PATH for the integration tests"
    bin_dir = hutch.root / "docker-only-bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "docker"
    if not link.exists():
        link.symlink_to(found)
    return str(bin_dir)


def test_podman_unavailable(hutch: Hutch, project: Path) -> None:
    tmp = hutch.root / "tmp"  # keeps /tmp clean whatever hutch leaves
    tmp.mkdir()
    env = hutch.env(PATH=only_docker_on_path(hutch), TMPDIR=str(tmp))
    result = exec_true(hutch, project, "--engine", "podman", env=env)
    assert result.returncode == 4, result.stderr
    assert "podman" in result.stderr
    assert "hint:" in result.stderr


# Not "engine": that is the fixture naming the engine flavour a test runs on.
@pytest.mark.parametrize("choice", [None, "docker"], ids=["auto", "docker"])
def test_docker_not_on_path(hutch: Hutch, project: Path, choice: str | None) -> None:
    empty = hutch.root / "empty-bin"
    empty.mkdir(exist_ok=True)
    flags = ("--engine", choice) if choice else ()
    tmp = hutch.root / "tmp"  # keeps /tmp clean whatever hutch leaves (see below)
    tmp.mkdir()
    result = exec_true(hutch, project, *flags, env=hutch.env(PATH=str(empty), TMPDIR=str(tmp)))
    assert result.returncode == 4, result.stderr
    if choice is None:  # auto: neither engine is installed
        assert "no container engine found (neither docker nor podman is on PATH)" in result.stderr
    else:
        assert "docker is not installed (not found on PATH)" in result.stderr
    assert "hint:" in result.stderr


def test_setup_failure_leaves_no_host_files(hutch: Hutch, project: Path) -> None:
    """A session that fails before its sandbox starts (here: no engine client)
    leaves nothing behind in the temp dir (the egress socket dir lives there)."""
    empty = hutch.root / "empty-bin"
    empty.mkdir(exist_ok=True)
    tmp = hutch.root / "tmp"
    tmp.mkdir()
    env = hutch.env(PATH=str(empty), TMPDIR=str(tmp))
    result = exec_true(hutch, project, "--engine", "docker", env=env)
    assert result.returncode == 4, result.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []


def _build_leftovers() -> set[str]:
    """Stopped containers whose command mentions the bogus package."""
    found = set()
    ids = docker("ps", "-aq", "--filter", "status=exited", "--filter", "status=created").stdout
    for cid in ids.split():
        cmd = docker("inspect", "--format", "{{json .Config.Cmd}}", cid).stdout
        if "no-such-package-xyz" in cmd:
            found.add(cid)
    return found


@dataclass(frozen=True)
class FailedBuild:
    result: subprocess.CompletedProcess[str]
    leftovers: set[str]


@pytest.fixture(scope="module")
def failed_build(docker_built: Built, it_root: Path) -> FailedBuild:
    """One build of a recipe with a package that does not exist."""
    hutch = Hutch(it_root / "failed-build")
    hutch.make_dirs()
    seed_pins(hutch, docker_built)
    project = hutch.root / "proj"
    project.mkdir()
    (project / "hutch.toml").write_text('version = 1\n[image]\npackages = ["no-such-package-xyz"]\n')
    assert hutch.run("config", "trust", cwd=project).returncode == 0  # [image] extras need it
    before = _build_leftovers()
    result = hutch.run("build", cwd=project, timeout=900)
    left = _build_leftovers() - before
    if left:
        docker("rm", "-f", *left)  # ours: do not let them pile up
    return FailedBuild(result, left)


def test_failed_build_names_the_step(failed_build: FailedBuild) -> None:
    result = failed_build.result
    assert result.returncode == 5, result.stderr
    last = [line for line in result.stderr.splitlines() if line.startswith("hutch: image build")]
    assert len(last) == 1, result.stderr
    assert "image build failed at Step " in last[0]
    assert "apt-get install" in last[0]
    assert "no-such-package-xyz" in result.stderr
    assert "hint: full log: " in result.stderr
    log = result.stderr.split("hint: full log: ", 1)[1].split(";", 1)[0]
    assert "no-such-package-xyz" in Path(log).read_text()
    assert result.stdout == ""  # no tag printed for an image that does not exist


def test_failed_build_leaves_no_container(failed_build: FailedBuild) -> None:
    # Threat model 7: nothing hutch started survives, a failed build included.
    assert not failed_build.leftovers, (
        f"the failed build left stopped containers behind: {sorted(failed_build.leftovers)}"
    )
