"""Time hutch's secret scan against `find ROOT -type f | wc -l` on one tree.

Builds a realistic project of N files (node_modules packages, a Python
virtualenv, source dirs, a .git dir with loose objects, a few secrets) in a
temp dir, warms the cache, then takes the median of several runs of each.

    python bench/secret_scan_bench.py [--files 100000] [--runs 7] [--json PATH]
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
from pathlib import Path

from hutch.secrets.scan import scan

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
DECOYS = (".env.example", "keys/id_ed25519.pub", "docs/env.md")


def build_tree(root: Path, total: int) -> int:
    """Create about ``total`` files under ``root``; return how many were made."""
    made = 0

    def touch(rel: str, data: bytes = b"x") -> None:
        nonlocal made
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made += 1

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
    pkg = 0
    while made < total:
        # node_modules shape: many small packages, a few levels deep each.
        base = f"node_modules/pkg{pkg}"
        for j in range(min(20, total - made)):
            touch(f"{base}/{('lib', 'dist', 'lib/util', 'src/a/b')[j % 4]}/f{j}.js")
        pkg += 1
    return made


def median_time(fn: object, runs: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hutch-scan-bench-") as tmp:
        root = Path(tmp) / "project"
        t0 = time.perf_counter()
        made = build_tree(root, args.files)
        print(f"built {made} files in {time.perf_counter() - t0:.1f}s under {root}")

        def run_find() -> int:
            out = subprocess.run(
                ["find", str(root), "-type", "f"], check=True, capture_output=True
            ).stdout
            return out.count(b"\n")

        # Warm the dentry/inode cache for both sides before timing.
        found = run_find()
        result = scan(root)
        scan_s = median_time(lambda: scan(root), args.runs)
        find_s = median_time(run_find, args.runs)

    ratio = scan_s / find_s
    print(f"{'':16}{'median':>10}")
    print(f"{'hutch scan()':16}{scan_s * 1000:>8.1f}ms   masked {len(result.files)} files, "
          f"{len(result.dirs)} dirs")
    print(f"{'find -type f':16}{find_s * 1000:>8.1f}ms   {found} files")
    print(f"ratio scan/find: {ratio:.2f}x   target: scan < 1000ms -> "
          f"{'ok' if scan_s < 1.0 else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "files": made,
                    "runs": args.runs,
                    "scan_median_s": scan_s,
                    "find_median_s": find_s,
                    "ratio": ratio,
                    "masked_files": list(result.files),
                    "masked_dirs": list(result.dirs),
                    "cpus": os.cpu_count(),
                    "python": sys.version.split()[0],
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if scan_s < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
