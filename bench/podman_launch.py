"""Launch cost on Podman: `hutch exec -- true` against a bare `podman run` of the
same image, with the same flags and mounts (what hutch's --dry-run prints).

Meant for rootless Podman: run it as the unprivileged user, e.g.

    runuser -u hutch-pod -- env -i HOME=/home/hutch-pod PATH=/usr/bin:/bin \\
        XDG_RUNTIME_DIR=/run/user/2345 /usr/bin/python3 bench/podman_launch.py \\
        --hutch /opt/hutch-pod-venv/bin/hutch [--runs 15] [--network none ...]

Interleaved paired runs, rotating which goes first; prints the medians and the
median of the per-round ratios (target: <= 1.15).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch_bench  # a sibling script, not a package

TIMEOUT = 120.0
BUILD_TIMEOUT = 1800.0
PROXY_TARGET = "target=/run/hutch"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    return launch_bench.timed(argv, env, cwd, TIMEOUT)  # a blocking wait: see there


def bare_argv(hutch: str, env: dict[str, str], project: Path, network: str, sock: Path) -> list[str]:
    out = subprocess.run(
        [hutch, "exec", "--network", network, "--dry-run", "--", "true"],
        env=env, cwd=project, check=True, capture_output=True, text=True, timeout=TIMEOUT,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    argv = shlex.split(out)
    assert argv[0] == "podman", f"hutch chose {argv[0]}, not podman"
    at = argv.index("--name")  # hutch names each session anew; so does the bare run
    del argv[at : at + 2]
    for i, arg in enumerate(argv):
        if arg.startswith("type=bind,") and PROXY_TARGET in arg.split(","):
            argv[i] = f"type=bind,source={sock},{PROXY_TARGET}"
    return argv


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--hutch", default=str(Path(sys.executable).parent / "hutch"))
    parser.add_argument("--network", action="append", choices=("none", "allowlist", "open"),
                        help="repeatable; default: none")  # fmt: skip
    args = parser.parse_args()
    networks = args.network or ["none"]
    driver = subprocess.run(["podman", "info", "--format", "{{.Store.GraphDriverName}} "
                             "{{.Host.Security.Rootless}}"], capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    print(f"podman storage driver {driver[0]}, rootless {driver[1]}")
    with tempfile.TemporaryDirectory(prefix="hutch-podbench-") as tmp:
        root = Path(tmp)
        project, sock = root / "project", root / "sock"
        project.mkdir()
        sock.mkdir()
        env = dict(os.environ, HUTCH_ENGINE="podman", PWD=str(project))
        for var in ("XDG_DATA_HOME", "XDG_STATE_HOME"):
            (root / var).mkdir()
            env[var] = str(root / var)
        subprocess.run([args.hutch, "-q", "build"], env=env, cwd=project, check=True,
                       stdout=subprocess.DEVNULL, timeout=BUILD_TIMEOUT)  # fmt: skip
        commands: dict[str, list[str]] = {}
        for network in networks:
            commands[f"hutch {network}"] = [args.hutch, "-q", "exec", "--network", network,
                                            "--", "true"]  # fmt: skip
            commands[f"bare {network}"] = bare_argv(args.hutch, env, project, network, sock)
        names = list(commands)
        for name in names:  # warm-up
            timed(commands[name], env, project)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.runs):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                samples[name].append(timed(commands[name], env, project))
    for network in networks:
        h, b = samples[f"hutch {network}"], samples[f"bare {network}"]
        ratio = statistics.median(x / y for x, y in zip(h, b, strict=True))
        print(f"--network {network}: hutch median {statistics.median(h):.3f}s, "
              f"bare podman run median {statistics.median(b):.3f}s, "
              f"ratio (median of {args.runs} paired runs) {ratio:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
