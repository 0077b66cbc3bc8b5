"""Project fixtures of real shapes for bench/project_launch.py, built once and cached.

    python bench/fixtures.py [--fixtures DIR] [--rebuild] [NAME ...]

Each fixture is a git repository (a few top-level files and src/ committed,
node_modules/ and .venv/ git-ignored as usual) whose dependency trees come
from the registries: `npm install` of pinned packages (lifecycle scripts
off: some download binaries from hosts this machine cannot reach), and for
400k a `.venv` made by /usr/bin/python3 with numpy, pandas and scipy from
PyPI. Transitive versions are whatever the registry resolves on the day of
the build, so counts move a little between machines; the cache keeps one
build until it is deleted (or --rebuild).

    empty  a few files
    10k    a small backend's node_modules
    100k   a web app's node_modules (Next, React, MUI with its icons, Jest, ...)
    400k   the 100k project (copied, so the same tree) plus three more
           node_modules trees (apps/admin: Angular; services/cloud: AWS, GCP,
           Azure SDKs; docs: Docusaurus, Gatsby, Storybook) and a .venv

The cache lives outside the repository: --fixtures, else $HUTCH_BENCH_FIXTURES,
else /var/cache/hutch-bench when it can be written, else
$XDG_CACHE_HOME/hutch-bench. A fixture is built in a temporary directory
beside its final place and renamed there when complete, with a manifest
(NAME.json: entry count, packages, tool versions) beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NAMES = ("empty", "10k", "100k", "400k")
INSTALL_TIMEOUT = 3600.0

# Ten tracked files at a few depths: the end-of-session bench rewrites them.
SOURCES = (
    "README.md",
    "docs/notes.md",
    "src/index.js",
    "src/app.js",
    "src/components/Button.js",
    "src/components/List.js",
    "src/lib/api.js",
    "src/lib/util.js",
    "test/app.test.js",
    "test/util.test.js",
)

# npm install batches, as they were first installed (one `npm install` per
# batch: installing a set at once can fail on peer ranges that a later batch
# satisfies). Top-level versions pinned.
SMALL_BACKEND = (
    ("express@5.3.0", "lodash@4.18.1", "axios@1.21.1", "dotenv@18.0.10", "commander@14.0.3",
     "chalk@5.6.2", "uuid@14.0.3", "dayjs@1.11.23", "eslint@10.16.0", "prettier@3.10.1",
     "nodemon@3.1.14"),
    ("typescript@7.0.2", "@types/node@26.6.11", "@types/express@5.0.6", "ts-node@10.9.2",
     "zod@4.6.7", "pino@10.4.0", "moment@2.31.0", "rxjs@7.8.2"),
)  # fmt: skip
WEB_APP = (
    ("react@19.3.1", "react-dom@19.3.1", "next@16.4.6", "typescript@7.0.2", "eslint@10.16.0",
     "jest@30.5.2", "webpack@5.113.0", "webpack-cli@7.3.1", "@babel/core@7.29.16",
     "@babel/preset-env@7.29.14", "lodash@4.18.1"),
    ("@mui/material@9.6.0", "@mui/icons-material@9.6.0", "@emotion/react@11.14.0",
     "@emotion/styled@11.14.1", "date-fns@4.4.0", "rxjs@7.8.2", "core-js@3.51.0",
     "eslint-config-next@16.4.6", "tailwindcss@4.3.5", "postcss@8.5.34", "autoprefixer@10.7.1",
     "prettier@3.10.1", "@testing-library/react@16.3.3", "@testing-library/jest-dom@6.9.1",
     "@types/react@19.3.3", "@types/node@26.6.11", "axios@1.21.1", "zod@4.6.7"),
    ("moment@2.31.0", "sass@1.108.2", "ts-node@10.9.2", "@types/jest@30.0.0", "lodash-es@4.18.1"),
    ("three@0.187.0", "chart.js@4.6.1", "@reduxjs/toolkit@2.16.0", "react-redux@9.3.1"),
)  # fmt: skip
ANGULAR_ADMIN = (
    ("@angular/core@21.2.26", "@angular/common@21.2.26", "@angular/compiler@21.2.26",
     "@angular/platform-browser@21.2.26", "@angular/router@21.2.26", "@angular/forms@21.2.26",
     "@angular/animations@21.2.26", "@angular/cli@21.2.30",
     "@angular-devkit/build-angular@21.2.24", "@angular/compiler-cli@21.2.26", "rxjs@7.8.2",
     "zone.js@0.16.3", "tslib@2.9.1", "karma@6.4.4", "jasmine-core@7.0.2",
     "@fortawesome/fontawesome-free@7.3.1"),
    ("antd@6.6.8", "@ant-design/icons@6.3.4", "lucide-react@1.82.0", "@tabler/icons-react@3.52.0",
     "bootstrap@5.3.9"),
    ("@angular/material@21.2.14", "@angular/cdk@21.2.14", "primeng@21.1.10"),
)  # fmt: skip
CLOUD_SERVICES = (
    ("@nestjs/core@12.5.1", "@nestjs/common@12.5.1", "@nestjs/platform-express@12.5.1",
     "@nestjs/cli@12.0.8", "typeorm@1.1.1", "pg@8.23.1", "mongoose@9.12.1", "prisma@7.10.1",
     "@prisma/client@7.10.0", "aws-sdk@2.1693.0", "@aws-sdk/client-s3@3.1175.0",
     "@aws-sdk/client-dynamodb@3.1169.0", "googleapis@178.0.0", "firebase-admin@13.10.0",
     "winston@3.19.0", "express@5.3.0"),
    ("firebase@13.2.0", "@aws-sdk/client-ec2@3.1169.0", "@aws-sdk/client-iam@3.1169.0",
     "@aws-sdk/client-lambda@3.1164.0", "@aws-sdk/client-sqs@3.1175.0",
     "@aws-sdk/client-sns@3.1169.0", "@aws-sdk/client-cloudformation@3.1169.0",
     "@aws-sdk/client-rds@3.1169.0", "@aws-sdk/client-ecs@3.1164.0", "@aws-sdk/client-kms@3.1164.0",
     "@aws-sdk/client-sts@3.1177.0", "@aws-sdk/client-cognito-identity-provider@3.1169.0",
     "@google-cloud/storage@7.22.0", "@google-cloud/pubsub@5.3.1",
     "@google-cloud/bigquery@8.3.1", "@azure/storage-blob@12.32.0", "@azure/identity@4.13.1",
     "@aws-sdk/client-cloudwatch@3.1164.0", "@aws-sdk/client-ssm@3.1169.0",
     "@aws-sdk/client-secrets-manager@3.1164.0", "@aws-sdk/client-ecr@3.1169.0",
     "@aws-sdk/client-route-53@3.1169.0", "@aws-sdk/client-cloudfront@3.1164.0",
     "aws-cdk-lib@2.276.0", "constructs@10.8.1", "aws-cdk@2.1148.1"),
)  # fmt: skip
DOCS_SITE = (
    ("vite@8.4.0", "vue@3.5.45", "vue-router@5.5.1", "pinia@4.1.0", "@vitejs/plugin-vue@6.0.11",
     "vitest@4.1.12", "storybook@10.6.7", "@storybook/vue3-vite@10.6.0",
     "@docusaurus/core@3.10.2", "@docusaurus/preset-classic@3.10.2"),
    ("@phosphor-icons/react@2.1.10", "@heroicons/react@2.2.0", "react-icons@5.7.0"),
    ("gatsby@5.16.1",),
)  # fmt: skip
PYTHON_PACKAGES = ("numpy==2.4.6", "pandas==3.1.1", "scipy==1.17.1")
SYSTEM_PYTHON = "/usr/bin/python3"

# fixture -> (directory inside it, npm batches); 400k starts as a copy of 100k.
NODE_TREES: dict[str, tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]] = {
    "empty": (),
    "10k": ((".", SMALL_BACKEND),),
    "100k": ((".", WEB_APP),),
    "400k": (("apps/admin", ANGULAR_ADMIN), ("services/cloud", CLOUD_SERVICES), ("docs", DOCS_SITE)),
}


class FixtureError(Exception):
    """A fixture could not be built or is not usable by this user."""


@dataclass(frozen=True)
class Fixture:
    name: str
    path: Path
    entries: int  # every directory entry below the root, .git included

    @property
    def label(self) -> str:
        return f"{self.name} ({self.entries:,} entries)"


def default_dir() -> Path:
    explicit = os.environ.get("HUTCH_BENCH_FIXTURES")
    if explicit:
        return Path(explicit)
    system = Path("/var/cache/hutch-bench")
    if os.access(system if system.exists() else system.parent, os.W_OK):
        return system
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hutch-bench"


def count_entries(root: Path) -> int:
    """Every entry below root (files, directories, links), links not followed."""
    total = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                total += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def _run(argv: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}  (in {cwd})\n")
        out.flush()
        done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=INSTALL_TIMEOUT, check=False)  # fmt: skip
    if done.returncode != 0:
        raise FixtureError(f"`{' '.join(argv[:3])} ...` failed ({done.returncode}); see {log}")


def _git(root: Path, log: Path, *args: str) -> None:
    identity = ["-c", "user.name=hutch bench", "-c", "user.email=bench@localhost",
                "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]  # fmt: skip
    _run(["git", *identity, *args], root, log)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _npm_tree(root: Path, fixture: str, rel: str, batches: tuple[tuple[str, ...], ...], log: Path) -> None:
    where = root / rel
    where.mkdir(parents=True, exist_ok=True)
    name = "bench-" + (rel.replace("/", "-") if rel != "." else fixture)
    (where / "package.json").write_text(
        json.dumps({"name": name, "version": "1.0.0", "private": True}, indent=2) + "\n"
    )
    for batch in batches:
        _run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error",
              "--save-exact", *batch], where, log)  # fmt: skip


def _sources(root: Path) -> None:
    for rel in SOURCES:
        if rel == "README.md":
            _write(root, rel, "# bench project\n\nA fixture of hutch's project bench.\n")
        elif rel.endswith(".md"):
            _write(root, rel, "notes\n")
        else:
            _write(root, rel, f"// {rel}\nexport const name = {json.dumps(rel)};\n")
    _write(root, ".gitignore", "node_modules/\n.venv/\n__pycache__/\n")


def _build(name: str, dest: Path, cache: Path, log: Path, need: Callable[[str], Fixture]) -> None:
    if name == "400k":
        base = need("100k")
        _run(["cp", "-a", "--", f"{base.path}/.", str(dest)], cache, log)
    else:
        _sources(dest)
        _git(dest, log, "init", "-q")
    for rel, batches in NODE_TREES[name]:
        _npm_tree(dest, name, rel, batches, log)
    tracked = [".gitignore", *SOURCES]
    for rel, _ in NODE_TREES[name]:
        tracked += [os.path.normpath(f"{rel}/package.json"), os.path.normpath(f"{rel}/package-lock.json")]
    if name == "400k":
        _run([SYSTEM_PYTHON, "-m", "venv", ".venv"], dest, log)
        _run([".venv/bin/pip", "install", "--disable-pip-version-check", "-q", *PYTHON_PACKAGES],
             dest, log)  # fmt: skip
        _write(dest, "requirements.txt", "".join(f"{p}\n" for p in PYTHON_PACKAGES))
        tracked.append("requirements.txt")
    _git(dest, log, "add", "--", *tracked)
    _git(dest, log, "commit", "-q", "-m", f"bench fixture {name}")


def _tool_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for tool, argv in (("node", ["node", "--version"]), ("npm", ["npm", "--version"]),
                       ("python", [SYSTEM_PYTHON, "--version"])):  # fmt: skip
        try:
            found[tool] = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                         check=True).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            found[tool] = "?"
    return found


def ensure(
    names: list[str], cache: Path, rebuild: bool = False, say: Callable[[str], None] | None = None
) -> dict[str, Fixture]:
    """The named fixtures, building the missing ones (400k builds 100k first)."""
    tell = say or (lambda message: print(f"fixtures: {message}", file=sys.stderr, flush=True))
    cache.mkdir(parents=True, exist_ok=True)
    done: dict[str, Fixture] = {}
    rebuilt: set[str] = set()

    def need(name: str) -> Fixture:
        if name in done:
            return done[name]
        path, manifest = cache / name, cache / f"{name}.json"
        if rebuild and name not in rebuilt and path.exists():
            tell(f"removing {path} (--rebuild)")
            shutil.rmtree(path)
        rebuilt.add(name)
        if path.exists() and not manifest.exists():
            tell(f"{path} has no manifest (an interrupted build?): rebuilding it")
            shutil.rmtree(path)
        if not path.exists():
            tmp = cache / f".{name}.building-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            log = cache / f"{name}.log"
            log.write_text("")
            tell(f"building {name} in {tmp} (log: {log}); the large ones take minutes")
            _build(name, tmp, cache, log, need)
            entries = count_entries(tmp)
            meta = {
                "name": name,
                "entries": entries,
                "built": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "npm_trees": {rel: [list(b) for b in batches] for rel, batches in NODE_TREES[name]},
                "python_packages": list(PYTHON_PACKAGES) if name == "400k" else [],
                "tools": _tool_versions(),
            }
            manifest.write_text(json.dumps(meta, indent=2) + "\n")
            tmp.rename(path)
        owner = path.stat().st_uid
        if owner != os.getuid():
            raise FixtureError(
                f"{path} belongs to uid {owner}, not to this user ({os.getuid()}): the bench "
                "needs fixtures of its own user (pass --fixtures DIR to build a set elsewhere)"
            )
        meta = json.loads(manifest.read_text())
        done[name] = Fixture(name, path, int(meta["entries"]))
        return done[name]

    for name in names:
        need(name)
    return {name: done[name] for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"fixtures to build (default: all): {', '.join(NAMES)}")  # fmt: skip
    parser.add_argument("--fixtures", type=Path, default=None, help="cache directory")
    parser.add_argument("--rebuild", action="store_true", help="build the named fixtures anew")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown fixture {unknown[0]!r}: choose from {', '.join(NAMES)}")
    cache = args.fixtures or default_dir()
    try:
        found = ensure(list(args.names or NAMES), cache, rebuild=args.rebuild)
    except (FixtureError, OSError, subprocess.SubprocessError) as err:
        print(f"fixtures: {err}", file=sys.stderr)
        return 1
    for fixture in found.values():
        print(f"{fixture.name:6} {fixture.entries:>8,} entries  {fixture.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
