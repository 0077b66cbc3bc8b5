"""The `.git` allowlist, against real git repositories.

A session is simulated without an engine: git runs in a copy of the host's
`.git` (the merged view the sandbox would see), and the files that differ
become the upper layer, deletions as `.wh.` whiteouts (the form
hutch.layers reads besides character devices).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hutch import gitlayer

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "HOME": "/nonexistent",
    "PATH": os.environ["PATH"],
}


def git(cwd: Path, *args: str, gitdir: Path | None = None) -> str:
    env = dict(ENV)
    if gitdir is not None:
        env["GIT_DIR"] = str(gitdir)
        env["GIT_WORK_TREE"] = str(cwd)
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


class Session:
    """A host repository and a sandbox's merged view of its .git."""

    def __init__(self, root: Path) -> None:
        self.work = root / "work"
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")
        (self.work / "a.txt").write_text("one\n")
        git(self.work, "add", "a.txt")
        git(self.work, "commit", "-q", "-m", "first")
        self.gitdir = self.work / ".git"
        self.merged = root / "merged"
        shutil.copytree(self.gitdir, self.merged, symlinks=True)
        self.upper = root / "upper"
        self.start = gitlayer.capture(str(self.gitdir))

    def inside(self, *args: str) -> str:
        return git(self.work, *args, gitdir=self.merged)

    def make_upper(self) -> Path:
        """What an overlay's upper would hold: files new or changed in merged,
        whiteouts for files gone from it."""
        for path in sorted(self.merged.rglob("*")):
            rel = path.relative_to(self.merged)
            lower = self.gitdir / rel
            target = self.upper / rel
            if path.is_dir() and not path.is_symlink():
                if not lower.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                continue
            if lower.exists() and not lower.is_symlink() and filecmp.cmp(path, lower, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)
        for path in sorted(self.gitdir.rglob("*")):
            rel = path.relative_to(self.gitdir)
            if not (self.merged / rel).exists() and (self.merged / rel.parent).is_dir():
                wh = self.upper / rel.parent / f".wh.{rel.name}"
                wh.parent.mkdir(parents=True, exist_ok=True)
                wh.write_text("")
        self.upper.mkdir(exist_ok=True)
        return self.upper

    def carry(self, session: str = "s1") -> dict[str, gitlayer.Decision]:
        decisions = gitlayer.carry(str(self.gitdir), str(self.make_upper()), self.start, session)
        return {d.rel: d for d in decisions}


@pytest.fixture
def s(tmp_path: Path) -> Session:
    return Session(tmp_path)


def test_a_commit_inside_arrives_on_the_hosts_branch(s: Session) -> None:
    (s.work / "b.txt").write_text("two\n")
    s.inside("add", "b.txt")
    s.inside("commit", "-q", "-m", "by the agent")
    inside_head = s.inside("rev-parse", "HEAD")
    decisions = s.carry()
    assert decisions["refs/heads/main"].outcome == "carried"
    assert decisions["index"].outcome == "carried"
    assert git(s.work, "rev-parse", "main") == inside_head
    assert git(s.work, "log", "-1", "--format=%s") == "by the agent"
    git(s.work, "fsck", "--strict")
    assert git(s.work, "status", "--porcelain") == ""


def test_config_hooks_and_indirection_files_stay_away(s: Session) -> None:
    with (s.merged / "config").open("a") as handle:
        handle.write("[core]\n\tfsmonitor = touch /tmp/pwned\n")
    (s.merged / "hooks" / "pre-commit").write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    (s.merged / "commondir").write_text("/tmp/elsewhere\n")
    (s.merged / "objects" / "info" / "alternates").write_text("/tmp/objects\n")
    (s.merged / "rebase-merge").mkdir()
    (s.merged / "rebase-merge" / "git-rebase-todo").write_text("exec touch /tmp/pwned\n")
    before = (s.gitdir / "config").read_bytes()
    decisions = s.carry()
    for rel in (
        "config",
        "hooks/pre-commit",
        "commondir",
        "objects/info/alternates",
        "rebase-merge/git-rebase-todo",
    ):
        assert decisions[rel].outcome == "kept", rel
    assert (s.gitdir / "config").read_bytes() == before
    for rel in ("hooks/pre-commit", "commondir", "objects/info/alternates", "rebase-merge"):
        assert not (s.gitdir / rel).exists(), rel


def test_a_ref_the_host_moved_meanwhile_is_parked(s: Session) -> None:
    (s.work / "b.txt").write_text("agent\n")
    s.inside("add", "b.txt")
    s.inside("commit", "-q", "-m", "agent")
    agent = s.inside("rev-parse", "HEAD")
    # The user commits on the host while the session runs.
    (s.work / "c.txt").write_text("user\n")
    git(s.work, "add", "c.txt")
    git(s.work, "commit", "-q", "-m", "user")
    user = git(s.work, "rev-parse", "HEAD")
    decisions = s.carry(session="abcd1234")
    assert decisions["refs/heads/main"].outcome == "conflict"
    assert git(s.work, "rev-parse", "main") == user
    assert git(s.work, "rev-parse", "hutch/abcd1234/main") == agent
    # The index the host wrote is not replaced either.
    assert decisions["index"].outcome == "conflict"


def test_an_object_that_does_not_match_its_name_is_kept(s: Session) -> None:
    blob = s.inside("hash-object", "-w", "a.txt")
    forged = s.merged / "objects" / "ab" / ("c" * 38)
    forged.parent.mkdir(exist_ok=True)
    shutil.copy(s.merged / "objects" / blob[:2] / blob[2:], forged)
    decisions = s.carry()
    assert decisions[f"objects/ab/{'c' * 38}"].outcome == "kept"
    assert not (s.gitdir / "objects" / "ab" / ("c" * 38)).exists()


def test_packs_from_gc_are_carried_and_valid(s: Session) -> None:
    for n in range(3):
        (s.work / f"f{n}.txt").write_text(f"{n}\n")
        s.inside("add", f"f{n}.txt")
        s.inside("commit", "-q", "-m", f"c{n}")
    s.inside("gc", "-q")
    head = s.inside("rev-parse", "HEAD")
    decisions = s.carry()
    packs = [d for d in decisions.values() if d.reason == "pack"]
    assert packs and all(d.outcome == "carried" for d in packs)
    # gc packed the refs: the branch still arrives.
    assert git(s.work, "rev-parse", "main") == head
    git(s.work, "fsck", "--strict")


def test_a_damaged_pack_is_kept(s: Session) -> None:
    s.inside("gc", "-q")
    pack = next((s.merged / "objects" / "pack").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[20] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    decisions = s.carry()
    rel = f"objects/pack/{pack.name}"
    assert decisions[rel].outcome == "kept"
    assert not (s.gitdir / rel).exists()


def test_branch_created_and_deleted(s: Session) -> None:
    git(s.work, "branch", "old")
    s.start = gitlayer.capture(str(s.gitdir))
    shutil.rmtree(s.merged)
    shutil.copytree(s.gitdir, s.merged, symlinks=True)
    s.inside("branch", "new")
    s.inside("branch", "-D", "old")
    decisions = s.carry()
    assert decisions["refs/heads/new"].outcome == "carried"
    assert decisions["refs/heads/old"].outcome == "carried"
    branches = git(s.work, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["main", "new"]


def test_checkout_of_another_branch_moves_head(s: Session) -> None:
    s.inside("checkout", "-q", "-b", "feature")
    decisions = s.carry()
    assert decisions["HEAD"].outcome == "carried"
    assert git(s.work, "symbolic-ref", "HEAD") == "refs/heads/feature"


def test_head_pointing_outside_refs_is_kept(s: Session) -> None:
    (s.merged / "HEAD").write_text("ref: ../../../etc/passwd\n")
    decisions = s.carry()
    assert decisions["HEAD"].outcome == "kept"
    assert (s.gitdir / "HEAD").read_text() == "ref: refs/heads/main\n"


def test_a_ref_with_an_invalid_name_or_content_keeps_all_refs(s: Session) -> None:
    (s.merged / "refs" / "heads" / "evil").write_text("not an object id\n")
    decisions = s.carry()
    assert decisions["refs/heads/evil"].outcome == "kept"
    assert not (s.gitdir / "refs" / "heads" / "evil").exists()


@pytest.mark.parametrize(
    "name, ok",
    [
        ("refs/heads/main", True),
        ("refs/heads/feature/x", True),
        ("refs/heads/../../config", False),
        ("refs/heads/.hidden", False),
        ("refs/heads/x.lock", False),
        ("refs/heads/a b", False),
        ("refs/heads/a\nb", False),
        ("refs/heads/a@{1}", False),
        ("HEAD", False),
        ("refs/heads/", False),
    ],
)
def test_ref_names(name: str, ok: bool) -> None:
    assert gitlayer.valid_ref_name(name) is ok


@pytest.mark.parametrize("version", ["2", "3", "4"])
def test_index_versions_parse_and_a_split_index_does_not(tmp_path: Path, version: str) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q")
    for name in ("link", "symlinker.txt", "/".join(["a" * 200] * 3), "deep/er/path.txt"):
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    git(work, "add", ".")
    git(work, "update-index", "--index-version", version)
    index = (work / ".git" / "index").read_bytes()
    assert gitlayer.index_valid(index, 40)
    assert not gitlayer.index_valid(index[:-1] + bytes([index[-1] ^ 1]), 40)
    git(work, "update-index", "--split-index")
    assert not gitlayer.index_valid((work / ".git" / "index").read_bytes(), 40)
