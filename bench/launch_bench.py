"""Launch cost: `hutch exec -- true` against a bare `docker run` of the same image.

Interleaved runs in one process, rotating which command goes first in each
round; prints medians and the median of the per-round ratios. The bare run is
the engine command that hutch's --dry-run prints (same image, mounts and flags)
minus hutch, so the ratio is what hutch itself adds.

    python bench/launch_bench.py [--runs 15] [--network open|allowlist|none ...] [--json PATH]

`bench/run` imports measure() from here; the command line is for a quick look.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HUTCH = str(Path(sys.executable).parent / "hutch")
RUN_TIMEOUT = 120.0  # seconds for one launch; a hung engine fails the bench
BUILD_TIMEOUT = 1800.0
PROXY_MOUNT_TARGET = "/run/hutch"


def as_installed() -> None:
    """hutch's modules compiled to bytecode, as `pipx install .` leaves them.

    An editable install run with PYTHONDONTWRITEBYTECODE set (as on CI
    machines) would otherwise compile every module it imports at every
    launch, ~130 ms that a user never pays. Idempotent and quick once done."""
    spec = importlib.util.find_spec("hutch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"bench: hutch is not installed for {sys.executable}")
    for location in spec.submodule_search_locations:
        subprocess.run([sys.executable, "-m", "compileall", "-q", location], check=True)


def isolated_env(root: Path) -> dict[str, str]:
    """The caller's environment with hutch's XDG directories under root, and
    hutch's bytecode compiled as an install leaves it."""
    as_installed()
    env = dict(os.environ)
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"),
                     ("XDG_CONFIG_HOME", "config")):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(root / sub)
    return env


def timed(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT) -> float:
    """Wall time of one successful run.

    Not subprocess.run(timeout=...): with a timeout its wait polls with sleeps
    that double up to 50 ms, which rounds every sample up to the next poll
    (31, 63, 113, ... ms) and makes ratios of such samples meaningless. A
    blocking wait returns when the child does; a timer kills a hung one.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        status = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - start
    if status != 0:
        raise subprocess.CalledProcessError(status, argv)
    return elapsed


def bare_argv(hutch_env: dict[str, str], project: Path, network: str, socket_dir: Path) -> list[str]:
    """The engine command hutch would run, minus hutch: same image, mounts and flags.

    In allowlist mode the dry run names a proxy socket directory that it then
    removes; the bare run mounts socket_dir there instead (see measure).
    """
    out = subprocess.run(
        [HUTCH, "exec", "--network", network, "--dry-run", "--", "true"],
        env=hutch_env, cwd=project, check=True, capture_output=True, text=True,
        timeout=RUN_TIMEOUT,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    argv = shlex.split(out)
    # A fresh container name per run, as hutch makes one: drop the fixed one.
    name_at = argv.index("--name")
    del argv[name_at : name_at + 2]
    for i, arg in enumerate(argv):
        if arg.startswith("type=bind,") and f"target={PROXY_MOUNT_TARGET}" in arg.split(","):
            argv[i] = f"type=bind,source={socket_dir},target={PROXY_MOUNT_TARGET}"
        elif "volume-opt=o=lowerdir=" in arg:
            argv[i] = _own_layer(arg, project, argv, socket_dir / f"layer-{i}")
        elif arg.startswith("HUTCH_GATE="):
            argv[i] = "HUTCH_GATE="  # no hutch to answer the start gate: start at once
    return argv


def _own_layer(spec: str, project: Path, argv: list[str], where: Path) -> str:
    """A copy-on-write layer mount of hutch's, with directories of the bench's.

    hutch names the layer's lower directory by a descriptor of its own process
    (/proc/PID/fd/N, gone after the dry run) and its upper and work
    directories in its state; the bare run gets the same directory by name and
    upper and work directories of its own."""
    target = next(f[len("target="):] for f in spec.split(",") if f.startswith("target="))
    workdir = argv[argv.index("--workdir") + 1]
    lower = project / os.path.relpath(target, workdir)
    (where / "upper").mkdir(parents=True, exist_ok=True)
    (where / "work").mkdir(parents=True, exist_ok=True)
    spec = re.sub(r"lowerdir=[^,\"]*", f"lowerdir={lower}", spec)
    spec = re.sub(r"upperdir=[^,\"]*", f"upperdir={where / 'upper'}", spec)
    return re.sub(r"workdir=[^,\"]*", f"workdir={where / 'work'}", spec)


def proxy_stand_in(socket_dir: Path) -> socket.socket:
    """A listening socket where a bare allowlist run's entrypoint waits for
    hutch's proxy (it answers nothing); mount socket_dir as /run/hutch."""
    (socket_dir / "egress").mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(socket_dir / "egress" / "egress.sock"))
    listener.listen()
    (socket_dir / "egress" / "egress.sock").chmod(0o666)
    return listener


def interleaved(
    commands: dict[str, list[str]], runs: int, env: dict[str, str], cwd: Path, warmup: int = 1
) -> dict[str, list[float]]:
    """Time every command once per round, rotating the order so that no command
    always runs first (or right after the same neighbour)."""
    names = list(commands)
    for _ in range(warmup):
        for name in names:
            timed(commands[name], env, cwd)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        if (i // len(names)) % 2:
            order.reverse()
        for name in order:
            samples[name].append(timed(commands[name], env, cwd))
    return samples


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios: drift in machine load cancels within a round."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


@dataclass(frozen=True)
class Launch:
    image: str
    runs: int
    samples: dict[str, list[float]]  # "hutch open", "bare open", "hutch allowlist", ...
    bare_argv: dict[str, list[str]]

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, hutch: str, bare: str) -> float:
        return paired_ratio(self.samples[hutch], self.samples[bare])


def measure(runs: int, networks: tuple[str, ...] = ("open",)) -> Launch:
    """Paired launches of hutch and the bare engine for each network mode,
    in a fresh project with hutch's XDG directories in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        socket_dir = root / "sock"
        listener = proxy_stand_in(socket_dir)
        env = isolated_env(root)
        image = subprocess.run(
            [HUTCH, "-q", "build"], env=env, cwd=project, check=True, text=True,
            stdout=subprocess.PIPE, timeout=BUILD_TIMEOUT,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        commands: dict[str, list[str]] = {}
        bare: dict[str, list[str]] = {}
        for network in networks:
            commands[f"hutch {network}"] = [HUTCH, "-q", "exec", "--network", network, "--", "true"]
            bare[network] = bare_argv(env, project, network, socket_dir)
            commands[f"bare {network}"] = bare[network]
        try:
            samples = interleaved(commands, runs, env | {"PWD": str(project)}, project)
        finally:
            listener.close()
    return Launch(image, runs, samples, bare)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--network", action="append", choices=("open", "allowlist", "none"),
                        help="repeatable; default: open")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    networks = tuple(args.network or ["open"])
    result = measure(args.runs, networks)
    report: dict[str, object] = {"image": result.image, "runs": result.runs}
    for network in networks:
        h, b = f"hutch {network}", f"bare {network}"
        ratio = result.ratio(h, b)
        print(f"hutch exec --network {network} -- true: median {result.median(h):.3f}s")
        print(f"bare docker run (same image, mounts):  median {result.median(b):.3f}s")
        print(f"ratio (median of paired runs):          {ratio:.2f}")
        report[network] = {"hutch_median_s": result.median(h), "bare_median_s": result.median(b),
                           "ratio_median_of_pairs": ratio}  # fmt: skip
    if args.json:
        report["samples"] = asdict(result)["samples"]
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
