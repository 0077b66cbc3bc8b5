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
import re
import shutil
import subprocess
import sys
import tempfile
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
    hutch_cold_s: float
    seed_cold_s: float
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


def timed_build(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, str]:
    """Run a build with its output to log; returns (wall seconds, output)."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    log.write_text(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise BuildBenchError(f"{' '.join(argv[:3])} failed ({done.returncode}); {log}:\n{tail}")
    return elapsed, done.stdout


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
        line = raw.strip().removeprefix("hutch: ").strip()
        if m := re.match(r"^(?:Step|STEP) \d+/\d+ ?: (.*)$", line):
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


def previous_version(current: str) -> str:
    """The release before `current`: an existing version, so that pinning it
    simulates an agent update without waiting for a new upstream release."""
    out = _capture(["npm", "view", AGENT_PACKAGE, "versions", "--json"], 120)
    versions = [str(v) for v in json.loads(out) if re.fullmatch(r"\d+\.\d+\.\d+", str(v))]

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    older = sorted((v for v in versions if key(v) < key(current)), key=key)
    if not older:
        raise BuildBenchError(f"no release of {AGENT_PACKAGE} older than {current}")
    return older[-1]


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


def measure(logs: Path, buildkit: bool, log: Callable[[str], None] = print) -> Build:
    logs.mkdir(parents=True, exist_ok=True)
    hutch_before = image_tags(f"hutch-{AGENT}")
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
            root = Path(tmp)
            project = root / "project"
            project.mkdir()
            env = isolated_env(root)
            context = root / "seed"
            context.mkdir()
            seed_context(context)

            log("cold build: hutch build --no-cache (fresh XDG state) ...")
            hutch_s, out = timed_build([HUTCH, "build", "--no-cache"], env, project,
                                       logs / "build-hutch-cold.log")  # fmt: skip
            hutch_tag = out.split()[-1]
            log(f"  {hutch_s:.0f}s, {hutch_tag}")

            seed_tag = f"{SEED_TAG}:cold"
            log("cold build: the seed's Dockerfile.claude, docker build --no-cache ...")
            made.append(seed_tag)
            # The builder hutch picks on this machine, for both.
            seed_s, _ = timed_build(
                ["docker", "build", "--no-cache", "--force-rm", "--tag", seed_tag,
                 "--file", "Dockerfile.claude", "."],
                env | {"DOCKER_BUILDKIT": "1" if buildkit else "0"}, context,
                logs / "build-seed-cold.log",
            )  # fmt: skip
            log(f"  {seed_s:.0f}s, {seed_tag}")
            hutch_size, seed_size = image_size(hutch_tag), image_size(seed_tag)

            # The agent update: pin the release before the one just built.
            pins = Path(env["XDG_STATE_HOME"]) / "hutch" / "versions.json"
            current = str(json.loads(pins.read_text())[AGENT]["version"])
            older = previous_version(current)
            pins.write_text(json.dumps({AGENT: {"version": older, "checked": time.time()}}) + "\n")
            log(f"agent update: {AGENT} {current} -> {older} (pinned), hutch build ...")
            update_s, out = timed_build([HUTCH, "build"], env, project,
                                        logs / "build-hutch-update.log")  # fmt: skip
            update_tag = out.split()[-1]
            if update_tag not in hutch_before:
                made.append(update_tag)
            log(f"  {update_s:.0f}s, {update_tag}")
    finally:
        # Every hutch-bench-seed:* image is this bench's, left over or not.
        for tag in made + sorted(image_tags(SEED_TAG) - set(made)):
            subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=300,
                           check=False)  # fmt: skip
    return Build(
        hutch_s, seed_s, hutch_tag, hutch_size, seed_size, SEED_SUBSTITUTIONS,
        analyse_update(current, older, update_s, update_tag, out),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--logs", type=Path, default=BENCH / "results" / "logs")
    args = parser.parse_args()
    buildkit = subprocess.run(["docker", "buildx", "version"], capture_output=True,
                              check=False).returncode == 0  # fmt: skip
    b = measure(args.logs, buildkit)
    print(
        f"cold build  hutch {b.hutch_cold_s:.1f}s  seed {b.seed_cold_s:.1f}s  "
        f"ratio {b.hutch_cold_s / b.seed_cold_s:.2f}"
    )
    print(
        f"image size  hutch {b.hutch_size_b / 1e9:.2f} GB  seed {b.seed_size_b / 1e9:.2f} GB  "
        f"ratio {b.hutch_size_b / b.seed_size_b:.2f}"
    )
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
