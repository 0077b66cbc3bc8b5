"""Cold image build and size against the seed article's recipe; rebuild after an agent update.

Both images are built with --no-cache from the same offline base on this
machine, hutch's first (whatever the first build warms on the way favours the
seed). The seed's recipe is bench/seed/Dockerfile.claude: the article's, with
only what cannot be fetched here replaced (SEED_SUBSTITUTIONS). Then, in the
same XDG state, the agent's pin moves to the release before the one built and
`hutch build` runs again: only the agent layer may rerun.

    python bench/build_bench.py [--json PATH]

The seed image (hutch-bench-seed:*) and the update's image are removed at the
end; hutch's cold image stays, as `hutch build` would leave it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from launch_bench import HUTCH, isolated_env

BENCH = Path(__file__).resolve().parent
SEED_DIR = BENCH / "seed"
SEED_TAG = "hutch-bench-seed"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
AGENT = "claude"
AGENT_PACKAGE = "@anthropic-ai/claude-code"
BUILD_TIMEOUT = 1800.0
SEED_SUBSTITUTIONS = (
    "FROM debian:latest -> debian:bookworm-slim (the offline base hutch builds from; "
    "no registry can be pulled here)",
    "nodesource's setup_20.x piped into bash -> Debian's `apt-get update && apt-get install -y "
    "nodejs npm` (deb.nodesource.com is unreachable here)",
    "added: COPY of the host's CA certificates and NODE_EXTRA_CA_CERTS, which the seed's "
    "`npm install` needs behind this machine's TLS-intercepting proxy",
)


STEP = re.compile(r"^(?:Step|STEP) \d+/\d+ ?: (.*)$")


class BuildBenchError(Exception):
    """A build failed or its result could not be read."""


@dataclass(frozen=True)
class Update:
    pinned_from: str
    pinned_to: str
    seconds: float
    image: str
    steps: list[tuple[str, bool]]  # (instruction, from cache)
    reran: list[str]  # RUN/COPY/ADD steps that ran
    cached_layers: int
    apt_cached: bool
    only_agent_layer: bool


@dataclass(frozen=True)
class Build:
    hutch_cold_s: float  # medians over the rounds
    seed_cold_s: float
    hutch_runs_s: list[float]
    seed_runs_s: list[float]
    hutch_steps: list[tuple[str, float]]  # of the last round
    seed_steps: list[tuple[str, float]]
    hutch_image: str
    hutch_size_b: int
    seed_size_b: int
    seed_substitutions: tuple[str, ...]
    update: Update


def _capture(argv: list[str], timeout: float) -> str:
    return subprocess.run(argv, check=True, text=True, capture_output=True,
                          timeout=timeout).stdout  # fmt: skip


def image_size(tag: str) -> int:
    return int(_capture(["docker", "image", "inspect", "--format", "{{.Size}}", tag], 60))


def image_tags(repo: str) -> set[str]:
    return set(_capture(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo], 60)
               .split())  # fmt: skip


@dataclass(frozen=True)
class Timed:
    seconds: float
    output: str
    steps: list[tuple[str, float]]  # (instruction, seconds until the next step began)


def timed_build(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Timed:
    """Run a build with its output to log, timing each step as its lines arrive."""
    stamped: list[tuple[float, str]] = []
    start = time.perf_counter()
    with subprocess.Popen(argv, env=env, cwd=cwd, text=True, errors="replace", bufsize=1,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:  # fmt: skip
        watchdog = threading.Timer(BUILD_TIMEOUT, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                stamped.append((time.perf_counter() - start, line.rstrip("\n")))
            status = proc.wait()
        finally:
            watchdog.cancel()
    elapsed = time.perf_counter() - start
    output = "\n".join(line for _, line in stamped)
    log.write_text(output + "\n")
    if status != 0:
        tail = "\n".join(output.splitlines()[-15:])
        raise BuildBenchError(f"{' '.join(argv[:3])} failed ({status}); {log}:\n{tail}")
    starts = [(t, m.group(1)) for t, line in stamped if (m := STEP.match(_bare(line)))]
    ends = [t for t, _ in starts[1:]] + [elapsed]
    steps = [(ins, end - t) for (t, ins), end in zip(starts, ends, strict=True)]
    return Timed(elapsed, output, steps)


def _bare(line: str) -> str:
    return line.strip().removeprefix("hutch: ").strip()


def seed_context(directory: Path) -> None:
    shutil.copy(SEED_DIR / "Dockerfile.claude", directory / "Dockerfile.claude")
    shutil.copy(SEED_DIR / "entrypoint.sh", directory / "entrypoint.sh")
    ca = directory / "ca"
    ca.mkdir()
    # The same certificates hutch's default `ca_certificates = "host"` copies.
    for path in sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []:
        shutil.copy(path, ca / path.name)


def build_steps(output: str) -> list[tuple[str, bool]]:
    """(instruction, came from cache) for each step of a classic or BuildKit build log."""
    steps: list[tuple[str, bool]] = []
    buildkit: dict[str, int] = {}
    for raw in output.splitlines():
        line = _bare(raw)
        if m := STEP.match(line):
            steps.append((m.group(1), False))
        elif "---> Using cache" in line and steps:
            steps[-1] = (steps[-1][0], True)
        elif m := re.match(r"^#(\d+) \[[^\]]*\] (.*)$", line):
            buildkit[m.group(1)] = len(steps)
            steps.append((m.group(2), False))
        elif (m := re.match(r"^#(\d+) CACHED$", line)) and m.group(1) in buildkit:
            index = buildkit[m.group(1)]
            steps[index] = (steps[index][0], True)
    return steps


def older_versions(current: str, count: int = 5) -> list[str]:
    """Up to `count` releases before `current`, newest first: existing versions,
    so that pinning one simulates an agent update without a new upstream release."""
    out = _capture(["npm", "view", AGENT_PACKAGE, "versions", "--json"], 120)
    versions = [str(v) for v in json.loads(out) if re.fullmatch(r"\d+\.\d+\.\d+", str(v))]

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    return sorted((v for v in versions if key(v) < key(current)), key=key, reverse=True)[:count]


def pin_older(pins: Path, current: str, env: dict[str, str], project: Path) -> str:
    """Pin the newest older release whose image does not exist yet (an existing
    one would be reused, not built); returns the version pinned."""
    for version in older_versions(current):
        pins.write_text(json.dumps({AGENT: {"version": version, "checked": time.time()}}) + "\n")
        dry = subprocess.run(
            [HUTCH, "-q", "exec", "--network", "none", "--dry-run", "--", "true"],
            env=env, cwd=project, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        image = dry.stdout.split()[-2]  # the engine argv ends with IMAGE true
        if not image_id(image):
            return version
    raise BuildBenchError(f"no older release of {AGENT_PACKAGE} without an image to update to")


def analyse_update(current: str, older: str, seconds: float, image: str, output: str) -> Update:
    steps = build_steps(output)
    layers = [(ins, cached) for ins, cached in steps
              if ins.split()[0].upper() in ("RUN", "COPY", "ADD")]  # fmt: skip
    reran = [ins for ins, cached in layers if not cached]
    agent = [ins for ins, _ in layers if "npm install -g" in ins and AGENT_PACKAGE in ins]
    apt_cached = any(cached for ins, cached in layers if "apt-get install" in ins)
    return Update(
        current, older, seconds, image, steps, reran,
        cached_layers=sum(1 for _, cached in layers if cached),
        apt_cached=apt_cached,
        only_agent_layer=bool(agent) and reran == agent and apt_cached,
    )  # fmt: skip


def image_id(ref: str) -> str:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else ""


def _docker(*args: str) -> None:
    subprocess.run(["docker", *args], capture_output=True, timeout=300, check=False)


def restore(before: dict[str, str], built: list[str], drop: list[str]) -> None:
    """Leave the engine as the bench found it, plus hutch's newest cold image:
    tags moved by a rebuild point back at their old image; the seed images
    (every hutch-bench-seed:*, left over or not), the update's image and any
    image of this bench that lost its tag are removed."""
    for tag, old in before.items():
        if old and image_id(tag) in built:
            _docker("tag", old, tag)
    for tag in drop + sorted(image_tags(SEED_TAG) - set(drop)):
        _docker("image", "rm", tag)
    for ref in reversed(built):
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{len .RepoTags}}", ref],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if ref and done.returncode == 0 and done.stdout.strip() == "0":
            _docker("image", "rm", ref)


def measure(logs: Path, buildkit: bool, rounds: int = 1, log: Callable[[str], None] = print) -> Build:
    """Cold builds of both recipes, `rounds` times, alternating which goes
    first (hutch in the first round); then the agent update."""
    logs.mkdir(parents=True, exist_ok=True)
    # `--no-cache` moves a tag that may already exist (someone's image of the
    # same recipe): remember every tag's image, to point it back at the end.
    before = {tag: image_id(tag) for tag in image_tags(f"hutch-{AGENT}")}
    seed_tag = f"{SEED_TAG}:cold"
    built: list[str] = []  # ids of every image this bench built
    drop = [seed_tag]  # tags to remove at the end
    hutch_runs: list[Timed] = []
    seed_runs: list[Timed] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
            root = Path(tmp)
            context = root / "seed"
            context.mkdir()
            seed_context(context)
            env: dict[str, str] = {}
            project = root
            hutch_tag = ""
            for n in range(rounds):
                for side in ("hutch", "seed") if n % 2 == 0 else ("seed", "hutch"):
                    if side == "hutch":
                        # A fresh XDG state each round, as a new user has.
                        env = isolated_env(root / f"xdg-{n}")
                        project = root / f"project-{n}"
                        project.mkdir()
                        log(f"cold build {n + 1}/{rounds}: hutch build --no-cache ...")
                        run = timed_build([HUTCH, "build", "--no-cache"], env, project,
                                          logs / f"build-hutch-cold-{n + 1}.log")  # fmt: skip
                        hutch_runs.append(run)
                        hutch_tag = run.output.split()[-1]
                        built.append(image_id(hutch_tag))
                        log(f"  {run.seconds:.0f}s, {hutch_tag}")
                    else:
                        log(f"cold build {n + 1}/{rounds}: the seed's Dockerfile.claude ...")
                        # The builder hutch picks on this machine, for both.
                        run = timed_build(
                            ["docker", "build", "--no-cache", "--force-rm", "--tag", seed_tag,
                             "--file", "Dockerfile.claude", "."],
                            os.environ | {"DOCKER_BUILDKIT": "1" if buildkit else "0"}, context,
                            logs / f"build-seed-cold-{n + 1}.log",
                        )  # fmt: skip
                        seed_runs.append(run)
                        built.append(image_id(seed_tag))
                        log(f"  {run.seconds:.0f}s, {seed_tag}")
            hutch_size, seed_size = image_size(hutch_tag), image_size(seed_tag)

            pins = Path(env["XDG_STATE_HOME"]) / "hutch" / "versions.json"
            current = str(json.loads(pins.read_text())[AGENT]["version"])
            older = pin_older(pins, current, env, project)
            log(f"agent update: {AGENT} {current} -> {older} (pinned), hutch build ...")
            update = timed_build([HUTCH, "build"], env, project, logs / "build-hutch-update.log")
            update_tag = update.output.split()[-1]
            built.append(image_id(update_tag))
            if update_tag not in before:
                drop.append(update_tag)
            log(f"  {update.seconds:.0f}s, {update_tag}")
    finally:
        restore(before, built, drop)
    return Build(
        statistics.median(r.seconds for r in hutch_runs),
        statistics.median(r.seconds for r in seed_runs),
        [r.seconds for r in hutch_runs], [r.seconds for r in seed_runs],
        hutch_runs[-1].steps, seed_runs[-1].steps,
        hutch_tag, hutch_size, seed_size, SEED_SUBSTITUTIONS,
        analyse_update(current, older, update.seconds, update_tag, update.output),
    )  # fmt: skip


def slow_steps(steps: list[tuple[str, float]], over: float = 1.0) -> str:
    """'RUN apt-get ... 61s, RUN npm ... 40s': the steps that took longer than `over`."""
    return ", ".join(f"{ins[:36]}... {s:.0f}s" for ins, s in steps if s >= over)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--logs", type=Path, default=BENCH / "results" / "logs")
    parser.add_argument("--rounds", type=int, default=1, help="cold builds of each recipe")
    args = parser.parse_args()
    buildkit = subprocess.run(["docker", "buildx", "version"], capture_output=True,
                              check=False).returncode == 0  # fmt: skip
    b = measure(args.logs, buildkit, args.rounds)
    print(
        f"cold build  hutch {b.hutch_cold_s:.1f}s  seed {b.seed_cold_s:.1f}s  "
        f"ratio {b.hutch_cold_s / b.seed_cold_s:.2f}"
    )
    print(
        f"image size  hutch {b.hutch_size_b / 1e9:.2f} GB  seed {b.seed_size_b / 1e9:.2f} GB  "
        f"ratio {b.hutch_size_b / b.seed_size_b:.2f}"
    )
    print(f"  hutch steps: {slow_steps(b.hutch_steps)}")
    print(f"  seed steps:  {slow_steps(b.seed_steps)}")
    u = b.update
    print(
        f"agent update {u.pinned_from} -> {u.pinned_to}: {u.seconds:.1f}s "
        f"({u.seconds / b.hutch_cold_s:.2f}x cold); reran {u.reran}; "
        f"only the agent layer: {u.only_agent_layer}"
    )
    if args.json:
        args.json.write_text(json.dumps(asdict(b), indent=2) + "\n")
    return 0 if u.only_agent_layer else 1


if __name__ == "__main__":
    sys.exit(main())
