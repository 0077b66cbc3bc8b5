"""Launch cost: `hutch exec -- true` against a bare `docker run` of the same image.

Paired runs, alternating which goes first, in one process; prints medians and
the ratio. The bare run uses the same image and the same mounts that hutch's
--dry-run prints, so the ratio is what hutch itself adds.

    python bench/launch_bench.py [--runs 15] [--network open|allowlist] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HUTCH = str(Path(sys.executable).parent / "hutch")


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bare_argv(hutch_env: dict[str, str], project: Path, network: str) -> list[str]:
    """The engine command hutch would run, minus hutch: same image, mounts and flags."""
    out = subprocess.run(
        [HUTCH, "exec", "--network", network, "--dry-run", "--", "true"],
        env=hutch_env, cwd=project, check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    argv = shlex.split(out)
    # Fresh container name per run, like hutch does.
    name_at = argv.index("--name")
    del argv[name_at : name_at + 2]
    return argv


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--network", default="open", choices=("open", "allowlist", "none"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        env = dict(os.environ)
        for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"),
                         ("XDG_CONFIG_HOME", "config")):  # fmt: skip
            env[var] = str(root / sub)
        subprocess.run([HUTCH, "-q", "build"], env=env, cwd=project, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        bare = bare_argv(env, project, args.network)
        hutch = [HUTCH, "-q", "exec", "--network", args.network, "--", "true"]
        # Warm both paths once.
        timed(bare, env)
        timed(hutch, env | {"PWD": str(project)})
        hutch_times: list[float] = []
        bare_times: list[float] = []
        os.chdir(project)
        for i in range(args.runs):
            pair = [(hutch, hutch_times), (bare, bare_times)]
            if i % 2:
                pair.reverse()
            for argv, sink in pair:
                sink.append(timed(argv, env))
        ratios = [h / b for h, b in zip(hutch_times, bare_times, strict=True)]
    result = {
        "metric": f"launch ({args.network})",
        "hutch_median_s": statistics.median(hutch_times),
        "bare_median_s": statistics.median(bare_times),
        "ratio_median_of_pairs": statistics.median(ratios),
        "runs": args.runs,
    }
    print(f"hutch exec --network {args.network} -- true: median {result['hutch_median_s']:.3f}s")
    print(f"bare docker run (same image, mounts):      median {result['bare_median_s']:.3f}s")
    print(f"ratio (median of paired runs):              {result['ratio_median_of_pairs']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
