from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch.secrets.scan import (
    DEFAULT_MASK_PATTERNS,
    DEFAULT_UNMASK_PATTERNS,
    ScanResult,
    check_patterns,
    scan,
)


def touch(root: Path, rel: str, data: bytes = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# One example file name per built-in file pattern (the dir patterns are below).
DEFAULT_FILE_EXAMPLES = {
    ".env": ".env",
    ".env.*": ".env.production",
    "*.pem": "server.pem",
    "*.key": "tls.key",
    "id_rsa*": "id_rsa_deploy",
    "id_ed25519*": "id_ed25519",
    "id_ecdsa*": "id_ecdsa",
    "id_dsa*": "id_dsa",
    "*.p12": "cert.p12",
    "*.pfx": "cert.pfx",
    "*.jks": "release.jks",
    "*.keystore": "debug.keystore",
    ".netrc": ".netrc",
    ".pgpass": ".pgpass",
    ".pypirc": ".pypirc",
    ".git-credentials": ".git-credentials",
    ".npmrc": ".npmrc",
    "credentials.json": "credentials.json",
    "service-account*.json": "service-account-prod.json",
    "*.tfstate": "terraform.tfstate",
    "*.tfstate.backup": "terraform.tfstate.backup",
}
DEFAULT_DIR_EXAMPLES = (".aws", ".ssh", ".gnupg")
DOCKER_CONFIG_PATTERNS = (".docker/config.json", "*/.docker/config.json")


def test_every_default_pattern_has_an_example_here() -> None:
    covered = set(DEFAULT_FILE_EXAMPLES) | {f"{d}/" for d in DEFAULT_DIR_EXAMPLES}
    assert covered | set(DOCKER_CONFIG_PATTERNS) == set(DEFAULT_MASK_PATTERNS)
    for pattern, name in DEFAULT_FILE_EXAMPLES.items():
        assert fnmatch.fnmatchcase(name, pattern), (pattern, name)


@pytest.mark.parametrize("pattern", sorted(DEFAULT_FILE_EXAMPLES))
def test_default_file_pattern_masks_at_root_and_in_depth(tmp_path: Path, pattern: str) -> None:
    name = DEFAULT_FILE_EXAMPLES[pattern]
    touch(tmp_path, name)
    touch(tmp_path, f"services/api/{name}")
    touch(tmp_path, "services/api/README.md")
    result = scan(tmp_path)
    assert result.files == tuple(sorted([name, f"services/api/{name}"]))
    assert result.dirs == ()


@pytest.mark.parametrize("name", DEFAULT_DIR_EXAMPLES)
def test_default_secret_dirs_are_masked_whole_and_not_entered(tmp_path: Path, name: str) -> None:
    touch(tmp_path, f"{name}/credentials")
    touch(tmp_path, f"{name}/nested/.env")
    touch(tmp_path, f"home/{name}/id_rsa")
    result = scan(tmp_path)
    assert result.dirs == (name, f"home/{name}")
    # Nothing inside a masked dir is listed on its own.
    assert result.files == ()


def test_a_file_named_like_a_secret_dir_is_not_masked(tmp_path: Path) -> None:
    touch(tmp_path, ".ssh")
    touch(tmp_path, "docs/.aws")
    assert scan(tmp_path) == ScanResult((), (), (), (), ())


def test_docker_config_masked_but_not_the_docker_dir(tmp_path: Path) -> None:
    touch(tmp_path, ".docker/config.json")
    touch(tmp_path, ".docker/Dockerfile")
    touch(tmp_path, "deploy/.docker/config.json")
    touch(tmp_path, "deploy/docker/config.json")
    touch(tmp_path, "config.json")
    result = scan(tmp_path)
    assert result.files == (".docker/config.json", "deploy/.docker/config.json")
    assert result.dirs == ()


@pytest.mark.parametrize(
    "name",
    [
        ".env.example",
        ".env.sample",
        ".env.template",
        ".env.dist",
        ".env.local.example",
        ".env.prod.template",
        "id_rsa.pub",
        "id_ed25519.pub",
    ],
)
def test_default_unmask_keeps_templates_and_public_keys_visible(tmp_path: Path, name: str) -> None:
    touch(tmp_path, name)
    touch(tmp_path, ".env")
    assert scan(tmp_path).files == (".env",)
    assert any(fnmatch.fnmatchcase(name, p) for p in DEFAULT_UNMASK_PATTERNS)


@pytest.mark.parametrize("name", [".env.examples", ".env.example.bak", ".env.sample.local"])
def test_near_misses_of_the_templates_stay_masked(tmp_path: Path, name: str) -> None:
    touch(tmp_path, name)
    assert scan(tmp_path).files == (name,)


@pytest.mark.parametrize(
    "name",
    ["env", ".envrc", "my.env", ".environment", "keys.py", "pem", "credentials.yaml", "id-rsa.md"],
)
def test_ordinary_names_are_not_masked(tmp_path: Path, name: str) -> None:
    touch(tmp_path, name)
    assert scan(tmp_path) == ScanResult((), (), (), (), ())


def test_default_file_patterns_do_not_hide_a_directory(tmp_path: Path) -> None:
    # `python -m venv .env` is common; the venv must stay visible, but the
    # walk still goes inside it.
    touch(tmp_path, ".env/pyvenv.cfg")
    touch(tmp_path, ".env/lib/tls.pem")
    touch(tmp_path, "certs.pem/readme.txt")
    result = scan(tmp_path)
    assert result.dirs == ()
    assert result.files == (".env/lib/tls.pem",)


def test_user_mask_basename_path_and_dir_only(tmp_path: Path) -> None:
    touch(tmp_path, "secrets.yml")
    touch(tmp_path, "app/config/secrets.yml")
    touch(tmp_path, "config/prod/db.yaml")
    touch(tmp_path, "app/config/prod/db.yaml")  # path pattern is anchored at the root
    touch(tmp_path, "private/a.txt")
    touch(tmp_path, "src/private")  # a file: `private/` matches directories only
    touch(tmp_path, "vault/token")  # plain user pattern also matches a directory
    result = scan(tmp_path, mask=["secrets.yml", "config/prod/*.yaml", "private/", "vault"])
    assert result.files == ("app/config/secrets.yml", "config/prod/db.yaml", "secrets.yml")
    assert result.dirs == ("private", "vault")


def test_star_in_a_path_pattern_crosses_slashes(tmp_path: Path) -> None:
    # fnmatch semantics, documented: `docs/*.txt` also matches deeper files.
    touch(tmp_path, "docs/a.txt")
    touch(tmp_path, "docs/deep/er/b.txt")
    touch(tmp_path, "other/docs/c.txt")
    assert scan(tmp_path, mask=["docs/*.txt"]).files == ("docs/a.txt", "docs/deep/er/b.txt")


def test_path_pattern_with_wildcard_last_component_can_mask_dirs(tmp_path: Path) -> None:
    touch(tmp_path, "build/out.bin")
    touch(tmp_path, "build/cache/x")
    result = scan(tmp_path, mask=["build/*"], use_defaults=False)
    assert result.files == ("build/out.bin",)
    assert result.dirs == ("build/cache",)


def test_user_unmask_beats_default_and_user_masks(tmp_path: Path) -> None:
    touch(tmp_path, ".env")
    touch(tmp_path, ".env.local")
    touch(tmp_path, "x.secret")
    result = scan(tmp_path, mask=["*.secret"], unmask=[".env.local", "x.secret"])
    assert result.files == (".env",)


def test_user_mask_beats_default_unmask(tmp_path: Path) -> None:
    touch(tmp_path, ".env.example")
    touch(tmp_path, ".env.sample")
    assert scan(tmp_path, mask=[".env.example"]).files == (".env.example",)


def test_unmasking_a_secret_dir_walks_it_and_masks_files_inside(tmp_path: Path) -> None:
    touch(tmp_path, ".ssh/id_rsa")
    touch(tmp_path, ".ssh/id_rsa.pub")
    touch(tmp_path, ".ssh/config")
    touch(tmp_path, ".aws/credentials")
    result = scan(tmp_path, unmask=[".ssh/"])
    assert result.dirs == (".aws",)
    assert result.files == (".ssh/id_rsa",)


def test_an_unmask_for_files_does_not_unmask_a_dir(tmp_path: Path) -> None:
    touch(tmp_path, ".ssh/id_rsa")
    touch(tmp_path, "notes/.ssh")
    result = scan(tmp_path, mask=[".ssh"], unmask=["notes/.ssh"])
    assert result.dirs == (".ssh",)
    assert result.files == ()


def test_without_defaults_only_user_masks_apply(tmp_path: Path) -> None:
    touch(tmp_path, ".env")
    touch(tmp_path, ".ssh/id_rsa")
    touch(tmp_path, "token.txt")
    result = scan(tmp_path, mask=["token.txt"], use_defaults=False)
    assert result.files == ("token.txt",)
    assert result.dirs == ()


def test_symlinks_are_never_followed_nor_masked_but_matching_ones_are_reported(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    touch(outside, ".env")
    touch(outside, "sub/id_rsa")
    project = tmp_path / "project"
    touch(project, "README.md")
    (project / "linked_dir").symlink_to(outside, target_is_directory=True)
    (project / ".env").symlink_to(outside / ".env")
    (project / "cfg").mkdir()
    (project / "cfg/.ssh").symlink_to(outside / "sub", target_is_directory=True)
    (project / ".env.prod").symlink_to("/nonexistent/dangling")
    (project / "docs").symlink_to(outside)
    result = scan(project)
    assert result.files == ()
    assert result.dirs == ()
    assert result.links == (".env", ".env.prod", "cfg/.ssh")
    assert result.hardlinks == ()


def test_unmask_applies_to_reported_links(tmp_path: Path) -> None:
    (tmp_path / ".env").symlink_to("/dev/null")
    (tmp_path / ".env.example").symlink_to("/dev/null")
    assert scan(tmp_path, unmask=[".env"]).links == ()
    assert scan(tmp_path).links == (".env",)


def test_hardlinks_are_reported_unless_masked(tmp_path: Path) -> None:
    outside = touch(tmp_path, "store/pkg.js")
    project = tmp_path / "project"
    touch(project, "src/plain.py")
    (project / "node_modules/pkg").mkdir(parents=True)
    os.link(outside, project / "node_modules/pkg/index.js")
    a = touch(project, "a.txt")
    os.link(a, project / "b.txt")
    env = touch(project, ".env")
    os.link(env, project / "env-copy")
    result = scan(project)
    assert result.hardlinks == ("a.txt", "b.txt", "env-copy", "node_modules/pkg/index.js")
    assert result.files == (".env",)


def test_git_dir_is_scanned_but_objects_only_for_hardlinks(tmp_path: Path) -> None:
    touch(tmp_path, ".git/HEAD")
    touch(tmp_path, ".git/deploy.key")
    touch(tmp_path, ".git/objects/ab/id_rsa")  # object names are never secrets
    touch(tmp_path, ".git/modules/sub/objects/cd/.env")
    shared = touch(tmp_path, "elsewhere.pack")
    os.link(shared, tmp_path / ".git/objects/pack-1.pack")
    result = scan(tmp_path)
    assert result.files == (".git/deploy.key",)
    assert result.hardlinks == (".git/objects/pack-1.pack", "elsewhere.pack")


def test_a_dir_named_objects_outside_git_is_scanned(tmp_path: Path) -> None:
    touch(tmp_path, "src/objects/id_rsa")
    assert scan(tmp_path).files == ("src/objects/id_rsa",)


ODD_DIRS = ["a b", "c:d", "e,f=g", "-rf", "new\nline", "$(touch pwned)", "ü"]


def test_odd_names_come_back_verbatim(tmp_path: Path) -> None:
    for d in ODD_DIRS:
        touch(tmp_path, f"{d}/.env")
        touch(tmp_path, f"{d}/{d}.pem")
        touch(tmp_path, f"{d}/plain.txt")
    touch(tmp_path, "-id_rsa")  # leading dash alone is not id_rsa*
    touch(tmp_path, "id_rsa --help")
    expected = sorted([f"{d}/.env" for d in ODD_DIRS] + [f"{d}/{d}.pem" for d in ODD_DIRS])
    result = scan(tmp_path)
    assert result.files == tuple(sorted([*expected, "id_rsa --help"]))
    assert not (tmp_path / "pwned").exists()


def test_undecodable_name_round_trips_through_fsencode(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/\xff\xfe.pem"
    with open(raw, "wb"):
        pass
    result = scan(tmp_path)
    assert [os.fsencode(p) for p in result.files] == [b"\xff\xfe.pem"]


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "empty"),
        ("/", "empty"),
        ("/etc/passwd", "relative"),
        ("../up", "'..'"),
        ("a/../b", "'..'"),
        ("a/./b", "'.'"),
        ("./.env", "'.'"),
        ("a//b", "empty path components"),
        ("!.env", "unmask"),
        ("**/secrets.yml", "'**'"),
        ("a\0b", "NUL"),
    ],
)
def test_invalid_patterns_raise_naming_the_pattern(pattern: str, fragment: str) -> None:
    for call in (
        lambda: scan(Path("/nonexistent"), mask=[pattern]),
        lambda: scan(Path("/nonexistent"), unmask=["ok", pattern]),
        lambda: check_patterns(["fine", pattern]),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert repr(pattern) in str(info.value)
        assert fragment in str(info.value)


def test_valid_patterns_pass_the_check() -> None:
    check_patterns([*DEFAULT_MASK_PATTERNS, *DEFAULT_UNMASK_PATTERNS, "a/b/", "x[ab]?.y"])


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "missing")


def unprivileged(fn: Callable[[], str]) -> str:
    """Run ``fn`` as an ordinary user: root reads every directory, so under
    root it runs in a forked child that drops to nobody first."""
    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        status = 1
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, fn().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return out


def test_unreadable_directories_are_skipped_not_fatal() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        touch(root, ".env")
        touch(root, "open/id_rsa")
        touch(root, "open/locked/.env")
        (root / "open").chmod(0o755)
        (root / "open/locked").chmod(0o000)

        def run() -> str:
            r = scan(root)
            return json.dumps([r.files, r.skipped])

        try:
            files, skipped = json.loads(unprivileged(run))
        finally:
            (root / "open/locked").chmod(0o755)
    assert files == [".env", "open/id_rsa"]
    assert skipped == ["open/locked"]


NAME_CHARS = st.sampled_from(list("ab.e-_* ?[]!"))
PATTERN_CHARS = st.sampled_from(list("ab.e-*?[]!"))
names = st.text(NAME_CHARS, min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
patterns = st.text(PATTERN_CHARS, min_size=1, max_size=5).filter(
    lambda p: not p.startswith("!") and "**" not in p and p not in (".", "..")
)


@settings(max_examples=150, deadline=None)
@given(st.sets(names, min_size=1, max_size=6), st.lists(patterns, min_size=1, max_size=3))
def test_user_masks_agree_with_fnmatchcase(file_names: set[str], masks: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in file_names:
            touch(root, f"d/{name}")
        result = scan(root, mask=masks, use_defaults=False)
    expected = sorted(f"d/{n}" for n in file_names if any(fnmatch.fnmatchcase(n, m) for m in masks))
    # A mask that matches "d" itself hides the directory instead.
    if any(fnmatch.fnmatchcase("d", m) for m in masks):
        assert result.dirs == ("d",)
        assert result.files == ()
    else:
        assert result.files == tuple(expected)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(alphabet="ab.*?[]/", min_size=1, max_size=6), max_size=5),
    st.text(alphabet="ab./", max_size=8),
)
def test_pattern_sets_match_as_fnmatchcase(patterns: list[str], text: str) -> None:
    from hutch.secrets.scan import _Globs

    expected = any(fnmatch.fnmatchcase(text, p) for p in patterns)
    assert _Globs(patterns).match(text) == expected, (patterns, text)



def test_star_shapes_match_as_fnmatchcase_exhaustively() -> None:
    # Every pattern of up to 4 characters from "ab*" against every string of up
    # to 4 from "ab": the string-test shapes (`lit*`, `*lit`, `lit*lit`) where
    # prefix and suffix overlap ("a*a" must not match "a").
    from itertools import product

    from hutch.secrets.scan import _Globs

    def words(alphabet: str, longest: int) -> list[str]:
        return ["".join(w) for n in range(longest + 1) for w in product(alphabet, repeat=n)]

    texts = words("ab", 4)
    for pattern in words("ab*", 4)[1:]:
        globs = _Globs([pattern])
        for text in texts:
            assert globs.match(text) == fnmatch.fnmatchcase(text, pattern), (pattern, text)
