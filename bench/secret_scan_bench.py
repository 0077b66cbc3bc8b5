"""Time hutch's walk of a project against `find ROOT -type f | wc -l` on one tree.

Builds a project of N files shaped like real ones (node_modules packages a few
levels deep, a virtualenv, source dirs, a .git dir with loose objects, a pnpm-
style store hard-linked into node_modules, a few secrets) in a temp dir, warms
the cache, then takes the median of interleaved runs of each side. The first
walk of a project (hutch.guard.tree's full walk: masks, host-executed files,
executables, hard links) is "scan"; a later walk of an unchanged project (the
re-walk of what changed, what a start in a known project costs) is
"snapshot". A second baseline, `find -links +1`, also lstats every file, as
the full walk must to see hard links; `find -type f` alone reads only
directory entries.

    python bench/secret_scan_bench.py [--files 100000] [--runs 7] [--json PATH]

Exits 1 when the full walk misses the 1 s target or its result is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hutch.guard import patterns
from hutch.guard import tree as t

TARGET_S = 1.0
SECRETS = (
    ".env",
    ".env.local",
    "services/api/.env.production",
    "deploy/tls/server.key",
    "deploy/tls/server.pem",
    "infra/terraform.tfstate",
    "keys/id_ed25519",
    ".npmrc",
)
SECRET_DIRS = (".aws", "ops/.ssh")
DECOYS = (".env.example", "keys/id_ed25519.pub", "docs/env.md", "src/keys.py")
STORE_LINKS = 100


def build_tree(root: Path, total: int) -> int:
    """Create ``total`` files under ``root`` (at least a few thousand); return
    the number of directory entries that are files."""
    made = 0

    def touch(rel: str, data: bytes = b"x") -> Path:
        nonlocal made
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made += 1
        return path

    for rel in SECRETS + DECOYS:
        touch(rel, b"SECRET=1\n")
    for rel in SECRET_DIRS:
        touch(f"{rel}/credentials", b"k\n")
    for i in range(200):
        touch(f".git/objects/{i % 256:02x}/{i:038x}")
    for name in ("HEAD", "config", "hooks/pre-commit.sample", "refs/heads/main"):
        touch(f".git/{name}")
    for i in range(2000):
        touch(f"src/pkg{i % 40}/mod{i}.py")
    for i in range(3000):
        touch(f".venv/lib/python3.11/site-packages/dist{i % 150}/m{i}.py")
    for i in range(STORE_LINKS):
        # Both names are inside the tree, so both count toward `total`.
        store = touch(f".pnpm-store/v3/files/{i % 16:02x}/{i:030x}")
        dest = root / f"node_modules/.pnpm/linked{i}/index.js"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(store, dest)
        made += 1
    pkg = 0
    while made < total:
        # node_modules shape: many small packages, a few levels deep each.
        base = f"node_modules/pkg{pkg}"
        for j in range(min(20, total - made)):
            touch(f"{base}/{('lib', 'dist', 'lib/util', 'src/a/b')[j % 4]}/f{j}.js")
        pkg += 1
    return made


class Result:
    """What one full walk found, in the shape this bench checks."""

    def __init__(self, tree: t.Tree) -> None:
        self.tree = tree
        self.files, self.dirs = tree.masked()
        self.hardlinks = tree.paths(t.HARDLINK)

    def __repr__(self) -> str:
        return f"files={self.files} dirs={self.dirs} hardlinks={len(self.hardlinks)}"


def scan(root: Path) -> Result:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return Result(t.Walker(fd, os.getuid(), patterns.Policy((), ()), None).full(str(root), "bench"))
    finally:
        os.close(fd)


def rewalk(root: Path, old: t.Tree) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t.Walker(fd, os.getuid(), patterns.Policy((), ()), None).refresh(old)
    finally:
        os.close(fd)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hutch-scan-bench-") as tmp:
        root = Path(tmp) / "project"
        t0 = time.perf_counter()
        made = build_tree(root, args.files)
        print(f"built {made} files in {time.perf_counter() - t0:.1f}s under {root}")

        def run_find(*extra: str) -> int:
            # `| wc -l`: the output is piped back and its lines counted.
            argv = ["find", str(root), "-type", "f", *extra]
            return subprocess.run(argv, check=True, capture_output=True).stdout.count(b"\n")

        # Warm the dentry/inode cache for every side before timing.
        found = run_find()
        linked = run_find("-links", "+1")
        result = scan(root)
        time.sleep(t.RACY_NS / 1e9 + 0.05)  # directories older than the racy window
        settled = scan(root).tree
        # Interleaved, so that drift in machine load hits every side alike.
        times: dict[str, list[float]] = {"scan": [], "find": [], "find_links": [], "snapshot": []}
        for _ in range(args.runs):
            times["scan"].append(timed(lambda: scan(root)))
            times["find"].append(timed(run_find))
            times["find_links"].append(timed(lambda: run_find("-links", "+1")))
            # Not part of the target: a later walk of the unchanged project.
            times["snapshot"].append(timed(lambda: rewalk(root, settled)))

    median = {side: statistics.median(runs) for side, runs in times.items()}
    correct = (
        result.files == tuple(sorted(SECRETS))
        and result.dirs == tuple(sorted(SECRET_DIRS))
        and len(result.hardlinks) == linked == 2 * STORE_LINKS
    )
    ok = correct and median["scan"] < TARGET_S
    print(f"{'':18}{'median':>9}")
    print(
        f"{'hutch full walk':18}{median['scan'] * 1000:>7.1f}ms  "
        f"{len(result.files)} files, {len(result.dirs)} dirs masked, "
        f"{len(result.hardlinks)} hard links"
    )
    print(f"{'find -type f':18}{median['find'] * 1000:>7.1f}ms  {found} files")
    print(f"{'find ... -links +1':18}{median['find_links'] * 1000:>7.1f}ms  {linked} hard links")
    unchanged = "(info: the same project again, unchanged)"
    print(f"{'walk of changes':18}{median['snapshot'] * 1000:>7.1f}ms  {unchanged}")
    print(
        f"ratio scan/find: {median['scan'] / median['find']:.2f}x   "
        f"scan/find-links: {median['scan'] / median['find_links']:.2f}x"
    )
    print(f"target scan < {TARGET_S:.0f}s: {'ok' if median['scan'] < TARGET_S else 'MISSED'}")
    if not correct:
        print(f"WRONG RESULT: {result}", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "files": made,
            "runs": args.runs,
            "median_s": median,
            "ratio_scan_find": median["scan"] / median["find"],
            "ratio_scan_find_links": median["scan"] / median["find_links"],
            "runs_s": times,
            "correct": correct,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
