"""Which files are secrets: the default patterns, user mask and unmask rules,
case, and the decisions made by content. Each rule is checked through a real
walk of a project (hutch.guard.tree), where the walk's own shortcuts apply."""

from __future__ import annotations

import fnmatch
import os
import tempfile
from itertools import product
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch.guard.patterns import (
    DEFAULT_MASK_PATTERNS,
    DEFAULT_UNMASK_PATTERNS,
    PEM_LIMIT,
    SMALL_LIMIT,
    Globs,
    Policy,
    check_patterns,
)

from .support import CERT, KEY, scan, write

# One example per built-in file pattern, written out here (not derived from
# the code), so that a pattern dropped from the defaults fails a test.
DEFAULT_FILE_EXAMPLES = {
    ".env": ".env",
    ".env.*": ".env.production",
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
    "client_secret*.json": "client_secret_1234.apps.googleusercontent.com.json",
    "service-account*.json": "service-account-prod.json",
    "*.tfstate": "terraform.tfstate",
    "*.tfstate.backup": "terraform.tfstate.backup",
    "*.tfvars": "prod.tfvars",
    "*.tfvars.json": "prod.tfvars.json",
    "secrets.yaml": "secrets.yaml",
    "secrets.yml": "secrets.yml",
    ".vault_pass": ".vault_pass",
    ".vault-pass": ".vault-pass",
    ".vault_password": ".vault_password",
    "*.ppk": "server.ppk",
}
# Root-relative patterns: an example path for each.
DEFAULT_PATH_EXAMPLES = {
    ".docker/config.json": ".docker/config.json",
    "*/.docker/config.json": "deploy/.docker/config.json",
    ".kube/config": ".kube/config",
    "*/.kube/config": "ops/.kube/config",
    ".cargo/credentials": ".cargo/credentials",
    ".cargo/credentials.toml": ".cargo/credentials.toml",
    "*/.cargo/credentials": "tools/.cargo/credentials",
    "*/.cargo/credentials.toml": "tools/.cargo/credentials.toml",
}
DEFAULT_DIR_EXAMPLES = (".aws", ".ssh", ".gnupg")


def test_every_default_pattern_has_an_example_here() -> None:
    covered = (
        set(DEFAULT_FILE_EXAMPLES) | set(DEFAULT_PATH_EXAMPLES) | {f"{d}/" for d in DEFAULT_DIR_EXAMPLES}
    )
    assert covered == set(DEFAULT_MASK_PATTERNS)
    for pattern, name in {**DEFAULT_FILE_EXAMPLES, **DEFAULT_PATH_EXAMPLES}.items():
        assert fnmatch.fnmatchcase(name, pattern), (pattern, name)


@pytest.mark.parametrize("pattern", sorted(DEFAULT_FILE_EXAMPLES))
def test_default_file_pattern_masks_at_root_and_in_depth(tmp_path: Path, pattern: str) -> None:
    name = DEFAULT_FILE_EXAMPLES[pattern]
    write(tmp_path / name)
    write(tmp_path / "services" / "api" / name)
    write(tmp_path / "Shouting" / name.upper())
    write(tmp_path / "services" / "api" / "README.md")
    found = scan(tmp_path)
    assert found.files == tuple(sorted([name, f"services/api/{name}", f"Shouting/{name.upper()}"]))
    assert found.dirs == ()
    # The negative control: the same tree without the built-in patterns.
    assert scan(tmp_path, use_defaults=False).files == ()


@pytest.mark.parametrize("pattern", sorted(DEFAULT_PATH_EXAMPLES))
def test_default_path_pattern_masks_its_file(tmp_path: Path, pattern: str) -> None:
    rel = DEFAULT_PATH_EXAMPLES[pattern]
    write(tmp_path / rel)
    write(tmp_path / "a" / "b" / rel.upper())
    found = scan(tmp_path)
    assert found.files == tuple(sorted([rel, f"a/b/{rel.upper()}"]))
    assert found.dirs == ()


@pytest.mark.parametrize("name", DEFAULT_DIR_EXAMPLES)
def test_default_secret_dirs_are_masked_whole_and_not_entered(tmp_path: Path, name: str) -> None:
    write(tmp_path / name / "credentials")
    write(tmp_path / name / "nested" / ".env")
    write(tmp_path / "home" / name / "id_rsa")
    write(tmp_path / "HOME" / name.upper() / "config")
    found = scan(tmp_path)
    assert found.dirs == tuple(sorted([name, f"home/{name}", f"HOME/{name.upper()}"]))
    # Nothing inside a masked directory is listed on its own, nor walked.
    assert found.files == ()
    assert found.walked == {"", "home", "HOME"}


def test_a_file_named_like_a_secret_dir_is_not_masked(tmp_path: Path) -> None:
    write(tmp_path / ".ssh")
    write(tmp_path / "docs" / ".aws")
    found = scan(tmp_path)
    assert found.files == () and found.dirs == ()


def test_docker_and_kube_config_masked_but_not_their_dirs(tmp_path: Path) -> None:
    write(tmp_path / ".docker" / "config.json")
    write(tmp_path / ".docker" / "Dockerfile")
    write(tmp_path / "deploy" / ".docker" / "config.json")
    write(tmp_path / "deploy" / "docker" / "config.json")
    write(tmp_path / "config.json")
    write(tmp_path / ".kube" / "config")
    write(tmp_path / ".kube" / "cache" / "discovery.json")
    write(tmp_path / "kube" / "config")
    found = scan(tmp_path)
    assert found.files == (".docker/config.json", ".kube/config", "deploy/.docker/config.json")
    assert found.dirs == ()


@pytest.mark.parametrize(
    "name",
    [
        ".env.example",
        ".env.sample",
        ".env.template",
        ".env.dist",
        ".env.local.example",
        ".env.prod.template",
        ".env.test.sample",
        ".ENV.Example",
        "id_rsa.pub",
        "id_ed25519.pub",
        "ID_RSA.PUB",
    ],
)
def test_default_unmask_keeps_templates_and_public_keys_visible(tmp_path: Path, name: str) -> None:
    write(tmp_path / name)
    write(tmp_path / ".env")
    assert scan(tmp_path).files == (".env",)
    assert any(fnmatch.fnmatchcase(name.lower(), p) for p in DEFAULT_UNMASK_PATTERNS)


@pytest.mark.parametrize(
    "name", [".env.examples", ".env.example.bak", ".env.sample.local", "id_rsa.pub.bak", "id_rsa.pubkey"]
)
def test_near_misses_of_the_templates_stay_masked(tmp_path: Path, name: str) -> None:
    write(tmp_path / name)
    assert scan(tmp_path).files == (name,)


@pytest.mark.parametrize(
    "name",
    [
        "env",
        ".envrc",
        "my.env",
        ".environment",
        "keys.py",
        "pem",
        "key",
        "credentials.yaml",
        "id-rsa.md",
        "secrets.py",
        "netrc.md",
        "Dockerfile",
    ],
)
def test_ordinary_names_are_not_masked(tmp_path: Path, name: str) -> None:
    write(tmp_path / name)
    found = scan(tmp_path)
    assert found.files == () and found.dirs == () and found.links == ()


def test_default_file_patterns_do_not_hide_a_directory(tmp_path: Path) -> None:
    # `python -m venv .env` is common: the venv stays visible, and the walk
    # still goes inside it.
    write(tmp_path / ".env" / "pyvenv.cfg")
    write(tmp_path / ".env" / "lib" / "tls.key")
    write(tmp_path / "certs.key" / "readme.txt")
    write(tmp_path / "id_rsa_backups" / "notes.md")
    found = scan(tmp_path)
    assert found.dirs == ()
    assert found.files == (".env/lib/tls.key",)
    assert {".env", ".env/lib", "certs.key", "id_rsa_backups"} <= found.walked


def test_user_mask_basename_path_and_dir_only(tmp_path: Path) -> None:
    write(tmp_path / "token.txt")
    write(tmp_path / "app" / "config" / "token.txt")
    write(tmp_path / "config" / "prod" / "db.yaml")
    write(tmp_path / "app" / "config" / "prod" / "db.yaml")  # a path pattern is anchored at the root
    write(tmp_path / "private" / "a.txt")
    write(tmp_path / "src" / "private")  # a file: `private/` matches directories only
    write(tmp_path / "vault" / "token")  # a plain user pattern also matches a directory
    found = scan(tmp_path, mask=["token.txt", "config/prod/*.yaml", "private/", "vault"])
    assert found.files == ("app/config/token.txt", "config/prod/db.yaml", "token.txt")
    assert found.dirs == ("private", "vault")
    assert "private" not in found.walked and "vault" not in found.walked


def test_star_in_a_path_pattern_crosses_slashes(tmp_path: Path) -> None:
    # fnmatch semantics, documented: `docs/*.txt` also matches deeper files.
    write(tmp_path / "docs" / "a.txt")
    write(tmp_path / "docs" / "deep" / "er" / "b.txt")
    write(tmp_path / "other" / "docs" / "c.txt")
    assert scan(tmp_path, mask=["docs/*.txt"]).files == ("docs/a.txt", "docs/deep/er/b.txt")


def test_path_pattern_with_wildcard_last_component_can_mask_dirs(tmp_path: Path) -> None:
    write(tmp_path / "build" / "out.bin")
    write(tmp_path / "build" / "cache" / "x")
    found = scan(tmp_path, mask=["build/*"], use_defaults=False)
    assert found.files == ("build/out.bin",)
    assert found.dirs == ("build/cache",)


def test_user_unmask_beats_default_and_user_masks(tmp_path: Path) -> None:
    write(tmp_path / ".env")
    write(tmp_path / ".env.local")
    write(tmp_path / "x.secret")
    write(tmp_path / "y.secret")
    found = scan(tmp_path, mask=["*.secret"], unmask=[".env.local", "x.secret"])
    assert found.files == (".env", "y.secret")


def test_user_mask_beats_default_unmask(tmp_path: Path) -> None:
    write(tmp_path / ".env.example")
    write(tmp_path / ".env.sample")
    assert scan(tmp_path, mask=[".env.example"]).files == (".env.example",)


def test_unmasking_a_secret_dir_walks_it_and_masks_files_inside(tmp_path: Path) -> None:
    write(tmp_path / ".ssh" / "id_rsa")
    write(tmp_path / ".ssh" / "id_rsa.pub")
    write(tmp_path / ".ssh" / "config")
    write(tmp_path / ".aws" / "credentials")
    found = scan(tmp_path, unmask=[".ssh/"])
    assert found.dirs == (".aws",)
    assert found.files == (".ssh/id_rsa",)
    assert ".ssh" in found.walked


def test_an_unmask_path_lifts_only_that_path(tmp_path: Path) -> None:
    write(tmp_path / ".ssh" / "id_rsa")
    write(tmp_path / "notes" / ".ssh")
    write(tmp_path / "more" / ".ssh" / "x")
    found = scan(tmp_path, mask=[".ssh"], unmask=["notes/.ssh"])
    assert found.dirs == (".ssh", "more/.ssh")
    assert found.files == ()


def test_without_defaults_only_user_masks_apply(tmp_path: Path) -> None:
    write(tmp_path / ".env")
    write(tmp_path / ".ssh" / "id_rsa")
    write(tmp_path / "token.txt")
    write(tmp_path / "server.pem", KEY)  # no content checks either
    write(tmp_path / "notes" / "deploy", KEY)
    found = scan(tmp_path, mask=["token.txt"], use_defaults=False)
    assert found.files == ("token.txt",)
    assert found.dirs == ()


def test_matching_ignores_case(tmp_path: Path) -> None:
    write(tmp_path / ".ENV")
    write(tmp_path / "keys" / "ID_RSA")
    write(tmp_path / "keys" / "Deploy.KEY")
    write(tmp_path / "Credentials.JSON")
    write(tmp_path / "home" / ".SSH" / "id_rsa")
    write(tmp_path / "Private" / "notes.md")
    write(tmp_path / "TOKEN.TXT")
    write(tmp_path / ".ENV.LOCAL")
    found = scan(tmp_path, mask=["private/", "token.txt", "*.Local"], unmask=[".env.local"])
    assert found.files == (".ENV", "Credentials.JSON", "TOKEN.TXT", "keys/Deploy.KEY", "keys/ID_RSA")
    assert found.dirs == ("Private", "home/.SSH")


# -- decided by content -------------------------------------------------------------


def test_pem_files_are_decided_by_content(tmp_path: Path) -> None:
    write(tmp_path / "certs" / "ca.pem", CERT * 3)  # only certificates: a CA bundle
    write(tmp_path / "certs" / "ca.crt", CERT)
    write(tmp_path / "certs" / "server.pem", CERT + KEY)
    write(tmp_path / "certs" / "KEY.PEM", KEY)
    write(tmp_path / "certs" / "server.crt", KEY)  # a key, whatever the suffix says
    write(tmp_path / "certs" / "empty.pem", "")  # nothing to hide
    write(tmp_path / "certs" / "deploy.pem", "c2VjcmV0\n")  # no PEM block: it cannot be told
    write(tmp_path / "certs" / "der.crt", "0\x82\x03")  # .crt and .cer without a block are DER
    write(tmp_path / "certs" / "gpg.pem", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQ\n")
    write(tmp_path / "certs" / "ssh.pem", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n")
    write(tmp_path / "certs" / "enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMII\n")
    found = scan(tmp_path)
    assert found.files == tuple(
        f"certs/{n}"
        for n in ("KEY.PEM", "deploy.pem", "enc.pem", "gpg.pem", "server.crt", "server.pem", "ssh.pem")
    )


def test_a_pem_too_large_to_read_counts_as_a_key(tmp_path: Path) -> None:
    big = write(tmp_path / "bundle.pem", CERT)
    os.truncate(big, PEM_LIMIT + 1)
    assert scan(tmp_path).files == ("bundle.pem",)
    # The control: at the limit, it is read and found to hold certificates only.
    os.truncate(big, PEM_LIMIT)
    assert scan(tmp_path).files == ()


def test_ca_bundles_in_a_virtualenv_stay_visible(tmp_path: Path) -> None:
    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    write(site / "certifi" / "cacert.pem", CERT * 50)
    write(site / "pip" / "_vendor" / "certifi" / "cacert.pem", CERT * 50)
    write(site / "leaked" / "key.pem", KEY)  # a .pem is read even in a vendored tree
    assert scan(tmp_path).files == (".venv/lib/python3.11/site-packages/leaked/key.pem",)


def test_small_files_outside_vendored_trees_are_read_for_keys(tmp_path: Path) -> None:
    write(tmp_path / "notes" / "deploy", KEY)  # no suffix
    write(tmp_path / "notes" / "server.txt", KEY)
    write(tmp_path / "notes" / "app.conf", "x = 1\n" + KEY)
    write(tmp_path / "notes" / "secring", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQ\n")
    write(tmp_path / "notes" / "howto.txt", "Run ssh-keygen; never commit a PRIVATE KEY.\n")
    write(tmp_path / "notes" / "plain", "just text\n")
    write(tmp_path / "notes" / "script.py", KEY)  # not a shape that is read
    write(tmp_path / "node_modules" / "pkg" / "fixture", KEY)  # vendored: by name only
    assert scan(tmp_path).files == ("notes/app.conf", "notes/deploy", "notes/secring", "notes/server.txt")


def test_a_key_past_the_small_limit_is_not_looked_for(tmp_path: Path) -> None:
    write(tmp_path / "big", "#" * SMALL_LIMIT + KEY)
    write(tmp_path / "small", "#" * (SMALL_LIMIT - len(KEY)) + KEY)
    assert scan(tmp_path).files == ("small",)


def test_cloud_key_json_is_masked_and_common_json_never_read(tmp_path: Path) -> None:
    gcp = (
        '{"type": "service_account", "project_id": "p", "private_key_id": "1",\n'
        ' "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n"}'
    )
    oauth = '{"installed": {"client_id": "x", "client_secret": "y"}}'
    write(tmp_path / "my-project-1234-abcd.json", gcp)
    write(tmp_path / "deploy" / "oauth.json", oauth)
    write(tmp_path / "deploy" / "settings.json", '{"private_key": "see vault"}')
    # package.json and its kin are never read for secrets, whatever they hold.
    write(tmp_path / "package.json", gcp)
    write(tmp_path / "tsconfig.json", oauth)
    write(tmp_path / "node_modules" / "x" / "fixture.json", gcp)  # vendored: by name only
    found = scan(tmp_path)
    assert found.files == ("deploy/oauth.json", "my-project-1234-abcd.json")


def test_a_user_unmask_lifts_the_content_checks(tmp_path: Path) -> None:
    write(tmp_path / "test" / "fixtures" / "server.pem", KEY)
    write(tmp_path / "test" / "fixtures" / "other.pem", KEY)
    assert scan(tmp_path, unmask=["test/fixtures/server.pem"]).files == ("test/fixtures/other.pem",)


# -- pattern checks ---------------------------------------------------------------


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
        lambda: Policy((pattern,), ()),
        lambda: Policy((), ("ok", pattern)),
        lambda: Policy((pattern,), (), use_defaults=False),
        lambda: check_patterns(["fine", pattern]),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert repr(pattern) in str(info.value)
        assert fragment in str(info.value)


def test_valid_patterns_pass_the_check() -> None:
    check_patterns([*DEFAULT_MASK_PATTERNS, *DEFAULT_UNMASK_PATTERNS, "a/b/", "x[ab]?.y", "Dir/"])


# -- the pattern sets against fnmatch ----------------------------------------------

NAME_CHARS = st.sampled_from(list("aAbB.e-_* ?[]!"))
PATTERN_CHARS = st.sampled_from(list("aAbB.e-*?[]!"))
NAMES = st.text(NAME_CHARS, min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
PATTERNS = st.text(PATTERN_CHARS, min_size=1, max_size=5).filter(
    lambda p: not p.startswith("!") and "**" not in p and p not in (".", "..")
)


@settings(max_examples=150, deadline=None)
@given(st.sets(NAMES, min_size=1, max_size=6), st.lists(PATTERNS, min_size=1, max_size=3))
def test_user_masks_agree_with_fnmatchcase_on_lower_case(file_names: set[str], masks: list[str]) -> None:
    def hit(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name.lower(), m.lower()) for m in masks)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in file_names:
            write(root / "d" / name)
        found = scan(root, mask=masks, use_defaults=False)
    if hit("d"):
        # A mask that matches "d" itself hides the directory instead.
        assert found.dirs == ("d",) and found.files == ()
    else:
        assert found.files == tuple(sorted(f"d/{n}" for n in file_names if hit(n)))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(alphabet="aAbB.*?[]/", min_size=1, max_size=6), max_size=5),
    st.text(alphabet="ab./", max_size=8),
)
def test_pattern_sets_match_as_fnmatchcase_on_lower_case(patterns: list[str], text: str) -> None:
    expected = any(fnmatch.fnmatchcase(text, p.lower()) for p in patterns)
    assert Globs(patterns).match(text) == expected, (patterns, text)


def test_star_shapes_match_as_fnmatchcase_exhaustively() -> None:
    # Every pattern of up to 4 characters from "aB*" against every string of up
    # to 4 from "ab": the string-test shapes (`lit*`, `*lit`, `lit*lit`) where
    # prefix and suffix overlap ("a*a" must not match "a").
    def words(alphabet: str, longest: int) -> list[str]:
        return ["".join(w) for n in range(longest + 1) for w in product(alphabet, repeat=n)]

    texts = words("ab", 4)
    for pattern in words("aB*", 4)[1:]:
        globs = Globs([pattern])
        for text in texts:
            assert globs.match(text) == fnmatch.fnmatchcase(text, pattern.lower()), (pattern, text)
