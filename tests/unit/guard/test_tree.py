"""The per-project walk: what one walk records, and that a re-walk of what
changed records exactly what a full walk would."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch.guard import patterns
from hutch.guard import tree as t

from .support import CERT, KEY, as_nobody, scan, write

UID = os.getuid()


def walker(root: Path, blobs: Path | None = None, policy: patterns.Policy | None = None) -> t.Walker:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    return t.Walker(fd, UID, policy or patterns.Policy((), ()), str(blobs) if blobs else None)


def full(root: Path, **kw: object) -> t.Tree:
    w = walker(root)
    try:
        return w.full(str(root), "p")
    finally:
        os.close(w.root_fd)


def refresh(root: Path, old: t.Tree) -> tuple[t.Tree, list[t.Pair]]:
    w = walker(root)
    try:
        return w.refresh(old)
    finally:
        os.close(w.root_fd)


def facts(tree: t.Tree) -> dict[str, tuple[int, int, int, str]]:
    """Every recorded entry by path, without the times (a racy entry is kept
    with time 0 by one walk and its real time by another)."""
    return {rel: (f.flags, f.mode, f.uid, f.extra) for rel, f in tree.entries(~0)}


def test_one_walk_records_what_matters(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root / "src" / "main.py", "print(1)\n")
    write(root / ".env", "TOKEN=1\n")
    write(root / "deep" / ".ENV", "TOKEN=1\n")  # case variants count
    write(root / ".env.example", "TOKEN=\n")
    write(root / ".ssh" / "id_rsa", KEY)
    write(root / "certs" / "ca.pem", CERT)  # only certificates: not a secret
    write(root / "certs" / "server.pem", CERT + KEY)
    write(root / "notes" / "key", KEY)  # a private key by content, no telling name
    write(root / "gcp.json", '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}')
    write(
        root / "node_modules" / "x" / "fixture.json", '{"private_key": "-----BEGIN"}'
    )  # vendored: by name only
    write(root / "node_modules" / "certifi" / "cacert.pem", CERT * 3)
    write(root / "infra" / "prod.tfvars", "a=1\n")
    write(root / "k8s" / ".kube" / "config", "apiVersion: v1\n")
    write(root / "run.sh", "#!/bin/sh\n", 0o755)
    write(root / "setuid", "#!/bin/sh\n", 0o4755)
    write(root / ".envrc", "use nix\n")
    write(root / "Makefile", "all:\n")
    write(root / "node_modules" / "x" / "package.json", "{}")  # vendored: not a build file
    write(root / ".venv" / "lib" / "site-packages" / "evil.pth", "import os\n")
    write(root / ".vscode" / "tasks.json", "{}")
    (root / "escape").symlink_to("/etc/passwd")
    (root / "inside").symlink_to("src/main.py")
    write(root / ".git" / "config", "[core]\n")  # the project's own: a layer, not walked
    write(root / "sub" / ".git" / "config", "[core]\n")  # a nested repository
    write(root / "sub" / ".git" / "objects" / "ab" / "cd", "x")
    os.link(root / "src" / "main.py", tmp_path / "outside-link")

    tree = full(root)
    files, dirs = tree.masked()
    assert set(files) == {
        ".env",
        "deep/.ENV",
        "certs/server.pem",
        "notes/key",
        "gcp.json",
        "infra/prod.tfvars",
        "k8s/.kube/config",
    }
    assert dirs == (".ssh",)
    assert tree.paths(t.EXEC) == ("run.sh", "setuid")
    assert tree.paths(t.SETID) == ("setuid",)
    assert tree.paths(t.OUTSIDE) == ("escape",)
    assert tree.paths(t.HARDLINK) == ("src/main.py",)
    assert tree.paths(t.BUILD) == ("Makefile",)
    assert tree.paths(t.STARTUP) == (".venv/lib/site-packages/evil.pth",)
    assert set(tree.paths(t.SURFACE)) == {".envrc", ".vscode/tasks.json", "sub/.git/config"}
    assert tree.paths(t.REPO) == ("sub/.git",)
    assert ".git" not in tree.dirs and "sub/.git/objects" not in tree.dirs
    assert ".ssh" not in tree.dirs  # a masked directory is not walked


def test_user_patterns_and_unmask(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root / "secrets" / "a.txt", "x")
    write(root / ".env", "x")
    write(root / "b.pem", KEY)
    w = walker(root, policy=patterns.Policy(("secrets/",), (".env", "b.pem")))
    tree = w.full(str(root), "p")
    assert tree.masked() == ((), ("secrets",))


def test_round_trip_and_policy_key(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root / ".env")
    write(root / "weird\nname\udcff", "x", 0o755)
    tree = full(root)
    text = tree.dumps()
    again = t.Tree.loads(text, str(root), UID, "p")
    assert again is not None and facts(again) == facts(tree)
    assert t.Tree.loads(text, str(root), UID, "other policy") is None
    assert t.Tree.loads(text, str(root / "x"), UID, "p") is None
    assert t.Tree.loads("{not json", str(root), UID, "p") is None


def test_a_directory_changed_just_now_is_looked_at_again(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root / "a" / "f")
    tree = full(root)
    assert tree.dirs["a"].ctime_ns == 0  # racy: changed within the walk's tick


def test_refresh_sees_a_secret_added_deep_in_node_modules(tmp_path: Path) -> None:
    root = tmp_path / "p"
    deep = root / "node_modules" / "/".join(f"d{i}" for i in range(12))
    write(deep / "index.js")
    old = _settled(root)
    write(deep / ".env", "TOKEN=1\n")
    new, pairs = refresh(root, old)
    rel = str((deep / ".env").relative_to(root))
    assert rel in new.masked()[0]
    assert [p.rel for p in pairs] == [rel]


def _settled(root: Path) -> t.Tree:
    """A full walk whose directories changed before the racy window."""
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    tree = full(root)
    for rel, record in tree.dirs.items():
        assert record.ctime_ns or not rel, rel
    return tree


# -- refresh equals a full walk, after any sequence of changes ------------------

NAMES = st.sampled_from(
    [
        "a",
        "b",
        ".env",
        "id_rsa",
        "run.sh",
        "Makefile",
        ".envrc",
        "x.pem",
        "node_modules",
        ".git",
        "k.json",
        "cfg",
    ]
)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["file", "exec", "dir", "rm", "rename", "link", "write", "chmod-exec", "key"]),
        st.lists(NAMES, min_size=1, max_size=3),
        st.lists(NAMES, min_size=1, max_size=3),
    ),
    max_size=12,
)


def _apply(root: Path, op: str, a: list[str], b: list[str]) -> None:
    src = root.joinpath(*a)
    dst = root.joinpath(*b)
    try:
        if op in ("file", "exec", "key"):
            # A new file each time: a mode changed in place on a file hutch
            # does not record is seen by the daily full walk only.
            if src.is_symlink() or src.is_file():
                src.unlink()
            write(src, KEY if op == "key" else "data", 0o755 if op == "exec" else 0o644)
        elif op == "dir":
            src.mkdir(parents=True, exist_ok=True)
        elif op == "rm":
            if src.is_dir() and not src.is_symlink():
                shutil.rmtree(src)
            else:
                src.unlink()
        elif op == "rename":
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        elif op == "link":
            src.parent.mkdir(parents=True, exist_ok=True)
            src.symlink_to("../" * (len(a) + 1) + "outside")
        elif op == "write" and src.is_file() and not src.is_symlink():
            src.write_text("changed content of another size")
        elif op == "chmod-exec" and src.is_file() and not src.is_symlink() and src.stat().st_mode & 0o111:
            # In place, on a file hutch records (an executable): seen by a re-stat.
            src.chmod(0o4755)
    except OSError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=OPS, after=OPS)
def test_refresh_equals_a_full_walk(
    tmp_path_factory: pytest.TempPathFactory, before: list, after: list
) -> None:
    root = tmp_path_factory.mktemp("p")
    for op in before:
        _apply(root, *op)
    old = _settled(root)
    for op in after:
        _apply(root, *op)
    new, pairs = refresh(root, old)
    assert facts(new) == facts(full(root))
    assert set(new.dirs) == set(full(root).dirs)
    changed = {p.rel for p in pairs}
    every = dict(old.entries(~0)), dict(new.entries(~0))
    differs = {rel for rel in set(every[0]) | set(every[1]) if every[0].get(rel) != every[1].get(rel)}
    # A directory made anew under an old name: what is in it is new, equal facts or not.
    replaced = {rel for rel in set(old.dirs) & set(new.dirs) if old.dirs[rel].ino != new.dirs[rel].ino}
    renewed = {rel for rel in every[1] if rel.rpartition("/")[0] in replaced}
    seen = {rel for rel in differs if facts(old).get(rel) != facts(new).get(rel)}
    assert seen <= changed <= differs | renewed


def _all(root: Path) -> Iterator[Path]:
    yield from root.rglob("*")


# -- what the walk reports beside masks -------------------------------------------


def test_symlinks_are_never_followed_nor_masked_but_matching_ones_are_reported(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / ".env")
    write(outside / "sub" / "id_rsa")
    project = tmp_path / "project"
    write(project / "README.md")
    (project / "linked_dir").symlink_to(outside, target_is_directory=True)
    (project / ".env").symlink_to(outside / ".env")
    (project / "cfg").mkdir()
    (project / "cfg" / ".ssh").symlink_to(outside / "sub", target_is_directory=True)
    (project / ".env.prod").symlink_to("/nonexistent/dangling")
    (project / "ID_RSA").symlink_to("README.md")
    (project / "docs").symlink_to(outside)
    found = scan(project)
    assert found.files == () and found.dirs == ()
    assert found.links == (".env", ".env.prod", "ID_RSA", "cfg/.ssh")
    assert found.walked == {"", "cfg"}
    assert found.hardlinks == ()


def test_unmask_applies_to_reported_links(tmp_path: Path) -> None:
    (tmp_path / ".env").symlink_to("/dev/null")
    (tmp_path / ".env.example").symlink_to("/dev/null")
    assert scan(tmp_path, unmask=[".env"]).links == ()
    assert scan(tmp_path).links == (".env",)


def test_hardlinks_are_reported_unless_masked(tmp_path: Path) -> None:
    outside = write(tmp_path / "store" / "pkg.js")
    project = tmp_path / "project"
    write(project / "src" / "plain.py")
    (project / "node_modules" / "pkg").mkdir(parents=True)
    os.link(outside, project / "node_modules" / "pkg" / "index.js")
    a = write(project / "a.txt")
    os.link(a, project / "b.txt")
    env = write(project / ".env")
    os.link(env, project / "env-copy")
    key = write(project / "deploy", KEY)  # masked by its content
    os.link(key, tmp_path / "deploy-elsewhere")
    found = scan(project)
    assert found.hardlinks == ("a.txt", "b.txt", "env-copy", "node_modules/pkg/index.js")
    assert found.files == (".env", "deploy")


def test_only_nested_repositories_are_walked_and_never_their_objects(tmp_path: Path) -> None:
    write(tmp_path / ".git" / "deploy.key")  # the project's own .git is a layer, not walked
    write(tmp_path / "sub" / ".git" / "deploy.key")
    write(tmp_path / "sub" / ".git" / "objects" / "ab" / "id_rsa")  # object names are never secrets
    write(tmp_path / "sub" / ".git" / "modules" / "m" / "objects" / "cd" / ".env")
    pack = write(tmp_path / "elsewhere.pack")
    os.link(pack, tmp_path / "sub" / ".git" / "shared.pack")  # git clone --local links packs
    write(tmp_path / "src" / "objects" / "id_rsa")  # a directory named objects elsewhere is walked
    found = scan(tmp_path)
    assert found.files == ("src/objects/id_rsa", "sub/.git/deploy.key")
    assert found.hardlinks == ("elsewhere.pack",)
    assert not {".git", "sub/.git/objects", "sub/.git/modules/m/objects"} & found.walked


ODD_DIRS = ["a b", "c:d", "e,f=g", "-rf", "new\nline", "$(touch pwned)", "ü", "tab\there", "\x1b[31m"]


def test_odd_names_come_back_verbatim(tmp_path: Path) -> None:
    for d in ODD_DIRS:
        write(tmp_path / d / ".env")
        write(tmp_path / d / f"{d}.key")
        write(tmp_path / d / "plain.txt")
    write(tmp_path / "-id_rsa")  # a leading dash alone is not id_rsa*
    write(tmp_path / "id_rsa --help")
    expected = sorted([f"{d}/.env" for d in ODD_DIRS] + [f"{d}/{d}.key" for d in ODD_DIRS])
    found = scan(tmp_path)
    assert found.files == tuple(sorted([*expected, "id_rsa --help"]))
    assert not (tmp_path / "pwned").exists()


def test_undecodable_names_round_trip_through_fsencode(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.mkdir(base + b"/\xffdir")
    for raw in (b"/\xff\xfe.key", b"/\xffdir/.ENV", b"/\xffdir/plain\xfe"):
        with open(base + raw, "wb"):
            pass
    found = scan(tmp_path)
    assert {os.fsencode(p) for p in found.files} == {b"\xff\xfe.key", b"\xffdir/.ENV"}
    # And through the saved tree, as the next session reads it.
    again = t.Tree.loads(found.tree.dumps(), str(tmp_path), UID, "p")
    assert again is not None and again.masked() == found.tree.masked()


def test_unreadable_directories_are_recorded_not_fatal() -> None:
    def body(root: Path) -> object:
        write(root / ".env")
        write(root / "open" / "id_rsa")
        write(root / "open" / "locked" / ".env")
        write(root / "open" / "locked" / "deeper" / "id_rsa")
        (root / "open" / "locked").chmod(0o000)
        found = scan(root)
        return [found.files, found.unreadable]

    files, unreadable = as_nobody(body)  # type: ignore[misc]
    assert files == [".env", "open/id_rsa"]
    assert unreadable == ["open/locked"]


def test_a_refresh_sees_a_directory_become_unreadable_and_readable_again() -> None:
    def body(root: Path) -> object:
        write(root / "a" / "locked" / ".env")
        write(root / "a" / "other.txt")
        locked = root / "a" / "locked"
        seen = []
        old = _settled(root)
        for mode in (0o000, 0o755):
            locked.chmod(mode)  # changes locked's ctime, not its parent's
            time.sleep(t.RACY_NS / 1e9 + 0.02)
            new, _ = refresh(root, old)
            whole = full(root)
            assert facts(new) == facts(whole), mode
            seen.append([new.masked()[0], new.paths(t.UNREADABLE)])
            old = new
        return seen

    assert as_nobody(body) == [[[], ["a/locked"]], [["a/locked/.env"], []]]


def test_a_refresh_sees_a_hard_link_made_from_outside_to_a_recorded_file(tmp_path: Path) -> None:
    # A new link changes neither the directory's ctime nor the file's mtime.
    root = tmp_path / "p"
    tool = write(root / "bin" / "tool", "#!/bin/sh\n", 0o755)
    old = _settled(root)
    os.link(tool, tmp_path / "outside")
    new, pairs = refresh(root, old)
    assert new.paths(t.HARDLINK) == ("bin/tool",)
    assert [p.rel for p in pairs] == ["bin/tool"]


SCREENED_NAMES = {
    "index.js": "x", "README.md": "x", ".ENV": "T=1\n", ".env.local": "T=1\n", "id_rsa_old": KEY,
    "Client_Secret_9.json": "{}", "credentials": "x", "config.json": "{}", "server.PEM": KEY,
    "bundle.crt": CERT, "site.pth": "import x\n", "sitecustomize.py": "x", ".git": "gitdir: /x\n",
    "secrets.yaml": "x", "deploy.key": KEY, "run": "#!/bin/sh\n", "plain.txt": KEY,
}


@pytest.mark.parametrize("policy", [patterns.Policy((), ()), patterns.Policy(("*.js",), ("README.md",))])
def test_the_vendored_screen_decides_as_the_full_test_does(tmp_path: Path, policy: patterns.Policy) -> None:
    # Plain vendored directories take a shortcut for names that decide
    # nothing; the facts must be those of the full test, name by name.
    for where in ("node_modules/pkg/lib", ".venv/lib/site-packages/m", "node_modules/.bin", "src"):
        for name, text in SCREENED_NAMES.items():
            write(tmp_path / where / name, text, 0o755 if name == "run" else 0o644)
    fast, slow = walker(tmp_path, policy=policy), walker(tmp_path, policy=policy)
    assert fast._screen is not None
    slow._screen = None  # the control: every name takes the full test
    try:
        screened, tested = fast.full(str(tmp_path), "p"), slow.full(str(tmp_path), "p")
    finally:
        os.close(fast.root_fd)
        os.close(slow.root_fd)
    assert facts(screened) == facts(tested)
    assert screened.masked() == tested.masked()
    # And the shortcut was taken, and decided something: masks inside node_modules.
    assert "node_modules/pkg/lib/.ENV" in screened.masked()[0]
    assert "node_modules/pkg/lib/server.PEM" in screened.masked()[0]
