"""What a user feels on real projects: hutch's launch and end of session, by project size.

    python bench/project_launch.py [--quick] [--sizes empty,10k,100k,400k] [--runs N]
                                   [--fixtures DIR] [--json PATH]

For each project fixture (bench/fixtures.py: empty, 10k, 100k and 400k
entries of real node_modules and .venv trees, git repos, cached outside the
repository), in two phases of interleaved rounds (order rotating per round):

warm, against a bare `docker run --rm --network none` of hutch's image with
the project bind-mounted (the baseline), command `true`:
  - `hutch -q exec -- true`, default (allowlist) mode, in a project hutch has
    run in before (every command runs once untimed first);
  - the bare run with hutch's own engine argv (its --dry-run, a listening
    socket standing in for the proxy's), to tell hutch's work from its flags;
  - end of session: a command that prints the time, rewrites ten tracked
    files, prints the time again, under hutch and bare. hutch's extra time
    after the container exits is (hutch's end - the last printed time) minus
    the same for the paired bare run; before the start likewise.
cold, against the seed article's launcher (bench/seed/launch.sh: its claude.sh
and entrypoint on hutch's image, whose `chown -R /workspace` visits every
entry of the project):
  - the first `hutch -q exec -- true` in the project: XDG_DATA/STATE/CACHE_HOME
    are a fresh copy, per run, of a state where hutch has built its image and
    run once elsewhere but never in this project, so any per-project state
    hutch keeps is cold;
  - the seed launcher, and the bare run again for reference.
Cold runs come after warm ones: the seed's chown sets the ctime of every entry,
which must not be what a warm hutch sees.

hutch's peak RSS is ru_maxrss from wait4() of its process: the maximum over
hutch and the children it waited for (the docker client), so the docker
client's own peak from the bare runs is shown beside it.

Times are medians (p90 in the notes and JSON); ratios are medians of
per-round ratios. Targets are issue 14's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fixtures  # noqa: E402  (sibling scripts, not a package)
from launch_bench import HUTCH, bare_argv, isolated_env, proxy_stand_in  # noqa: E402

SIZES = fixtures.NAMES
RUNS = {"empty": 21, "10k": 15, "100k": 11, "400k": 7}
QUICK_SIZES = ("empty", "100k")
QUICK_RUNS = 5
RUN_TIMEOUT = 900.0
ATTEMPTS = 3
BUILD_TIMEOUT = 1800.0
SEED_LAUNCH = BENCH / "seed" / "launch.sh"
SEED_ENTRYPOINT = BENCH / "seed" / "entrypoint.sh"
SEED_SUDO = 'exec sudo -u "#$USER_UID" -g "#$USER_GID" HOME="$USER_HOME" claude "$@"\n'
SEED_SETPRIV = (
    'exec setpriv --reuid="$USER_UID" --regid="$USER_GID" --init-groups env HOME="$USER_HOME" "$@"\n'
)

WARM_TARGET = {"empty": 1.15, "100k": 1.3, "400k": 1.5}
END_TARGET_S = {"100k": 0.100}
RSS_TARGET_MIB = {"400k": 100.0}

# Prints the time, rewrites the files named after the token, prints the time.
WRITER = 'date +%s.%N; t=$1; shift; for f in "$@"; do printf "%s\\n" "$t" > "$f"; done; date +%s.%N'


class BenchError(Exception):
    """A run failed or printed what the bench cannot read."""


@dataclass(frozen=True)
class Sample:
    seconds: float  # wall time, perf_counter around spawn .. wait4
    maxrss_mib: float  # ru_maxrss of the process and the children it waited for
    cpu: float  # user + system seconds of the same (steadier than wall time on a busy machine)
    started: float  # time.time() just before the spawn
    ended: float  # time.time() just after wait4 returned
    stamps: tuple[float, ...]  # times the command printed (`date +%s.%N`), if any


def timed(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT) -> Sample:
    """One successful run, timed with a blocking wait4 (see launch_bench.timed)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)  # fmt: skip
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - t0
        ended = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-600:]
            raise BenchError(f"{' '.join(argv[:6])} ... exited {proc.returncode}: {tail}")
        out.seek(0)
        stamps: list[float] = []
        for line in out.read().decode(errors="replace").splitlines():
            try:
                stamps.append(float(line))
            except ValueError:
                continue
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(seconds, usage.ru_maxrss / 1024, cpu, started, ended, tuple(stamps))


def attempt(run: Callable[[int], Sample], i: int, failures: list[str]) -> Sample:
    """A run, tried again after a failure (this machine is shared and at times
    so loaded that a launch times out); each failure is kept for the report."""
    for _ in range(ATTEMPTS - 1):
        try:
            return run(i)
        except BenchError as err:
            failures.append(str(err))
    return run(i)


def rounds(
    runs: dict[str, Callable[[int], Sample]],
    count: int,
    warmup: Sequence[str],
    into: SizeResult,
    say: Callable[[str], None],
) -> None:
    """Run each once per round, rotating the order (and reversing it every
    other cycle) so that none always goes first or after the same neighbour."""
    names = list(runs)
    for name in warmup:
        attempt(runs[name], -1, into.failures)
    for name in names:
        into.samples[name] = []
    for i in range(count):
        into.loads.append(os.getloadavg()[0])
        order = names[i % len(names) :] + names[: i % len(names)]
        if (i // len(names)) % 2:
            order.reverse()
        for name in order:
            into.samples[name].append(attempt(runs[name], i, into.failures))
        say(
            f"  round {i + 1}/{count} (load {into.loads[-1]:.1f}): "
            + ", ".join(f"{n} {into.samples[n][-1].seconds:.2f}s" for n in names)
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def paired(num: list[Sample], den: list[Sample]) -> float:
    return median([n.seconds / d.seconds for n, d in zip(num, den, strict=True)])


@dataclass
class SizeResult:
    name: str
    entries: int
    path: str
    runs: int
    masked: int  # paths hutch masks in this project (from its --dry-run)
    loads: list[float] = field(default_factory=list)  # 1-minute load average at each round
    failures: list[str] = field(default_factory=list)  # runs that failed and were tried again
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def times(self, name: str) -> list[float]:
        return [s.seconds for s in self.samples[name]]

    def med(self, name: str) -> float:
        return median(self.times(name))

    def cpu(self, name: str) -> float:
        return median([s.cpu for s in self.samples[name]])

    def ratio(self, num: str, den: str) -> float:
        return paired(self.samples[num], self.samples[den])

    def before_start_extra(self, base: str = "bare end") -> float:
        """hutch's extra time from spawn to the command's first output, paired."""
        pairs = zip(self.samples["hutch end"], self.samples[base], strict=True)
        return median([(h.stamps[0] - h.started) - (b.stamps[0] - b.started) for h, b in pairs])

    def tail(self, name: str) -> list[float]:
        """From the command's last output to the launcher's exit."""
        return [s.ended - s.stamps[-1] for s in self.samples[name]]

    def after_exit_extra(self, base: str = "bare end") -> list[float]:
        return [h - b for h, b in zip(self.tail("hutch end"), self.tail(base), strict=True)]

    def peak_rss(self, prefix: str) -> float:
        return max(s.maxrss_mib for name, ss in self.samples.items() if name.startswith(prefix) for s in ss)


@dataclass
class Result:
    image: str
    sizes: list[SizeResult]
    errors: dict[str, str]  # size -> why it has no result


def _bare(project: Path, image: str, command: list[str]) -> list[str]:
    return ["docker", "run", "--rm", "--network", "none", "--mount",
            f"type=bind,source={project},target={project}", "--workdir", str(project), image,
            *command]  # fmt: skip


def _hutch_argv_bare(env: dict[str, str], project: Path, socket_dir: Path) -> tuple[list[str], int]:
    """hutch's engine argv for `exec -- true` (labels dropped, so that no `hutch
    gc` elsewhere takes the bench's containers for its own), and how many
    paths it masks."""
    argv = bare_argv(env, project, "allowlist", socket_dir)
    kept: list[str] = []
    masked = 0
    i = 0
    while i < len(argv):
        if argv[i] == "--label":
            i += 2
            continue
        if i > 0 and argv[i - 1] == "--mount" and "/hutch/empty/" in argv[i]:
            masked += 1
        kept.append(argv[i])
        i += 1
    return kept, masked


def measure_size(
    fixture: fixtures.Fixture, runs: int, image: str, root: Path, template: Path,
    socket_dir: Path, say: Callable[[str], None],
) -> SizeResult:  # fmt: skip
    project = fixture.path
    env = isolated_env(root / "warm") | {"XDG_CACHE_HOME": str(root / "warm" / "cache"), "PWD": str(project)}
    hutch_argv, masked = _hutch_argv_bare(env, project, socket_dir)
    result = SizeResult(fixture.name, fixture.entries, str(project), runs, masked)
    say(f"{fixture.label}: {project}, {runs} rounds, hutch masks {masked} path(s)")

    def end_command(tag: str, i: int) -> list[str]:
        return ["sh", "-c", WRITER, "sh", f"{tag} {i}", *fixtures.SOURCES]

    warm: dict[str, Callable[[int], Sample]] = {
        "bare": lambda i: timed(_bare(project, image, ["true"]), env, project),
        "hutch": lambda i: timed([HUTCH, "-q", "exec", "--", "true"], env, project),
        "bare hutch-argv": lambda i: timed(hutch_argv, env, project),
        "hutch end": lambda i: timed([HUTCH, "-q", "exec", "--", *end_command("hutch", i)], env, project),
        "bare end": lambda i: timed(_bare(project, image, end_command("bare", i)), env, project),
        "bare hutch-argv end": lambda i: timed(hutch_argv[:-1] + end_command("argv", i), env, project),
    }
    say(f"{fixture.name}: warm phase")
    rounds(warm, runs, list(warm), result, say)
    last = subprocess.run([HUTCH, "exec", "--", "true"], env=env, cwd=project, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
    result.warnings = [line for line in last.stderr.splitlines() if "warning" in line]

    seed_home = root / "seed-home"
    seed_home.mkdir(exist_ok=True)
    seed_env = os.environ | {
        "HOME": str(seed_home), "USER": os.environ.get("USER") or _user_name(), "PWD": str(project),
        "SEED_IMAGE": image, "SEED_ENTRYPOINT": str(root / "seed-entrypoint.sh"),
    }  # fmt: skip

    def cold(i: int) -> Sample:
        state = root / f"cold-{i}"
        if state.exists():
            shutil.rmtree(state)
        shutil.copytree(template, state, symlinks=True)
        cold_env = env | {var: str(state / sub) for var, sub in XDG_SUBDIRS.items()}
        try:
            return timed([HUTCH, "-q", "exec", "--", "true"], cold_env, project)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    cold_runs: dict[str, Callable[[int], Sample]] = {
        "hutch cold": cold,
        "seed": lambda i: timed(["bash", str(SEED_LAUNCH), "true"], seed_env, project),
        "bare cold": lambda i: timed(_bare(project, image, ["true"]), env, project),
    }
    say(f"{fixture.name}: cold phase")
    rounds(cold_runs, runs, ["seed", "bare cold"], result, say)
    return result


def seed_entrypoint(path: Path) -> None:
    """The article's entrypoint.sh but for its last line: sudo, absent from
    hutch's image, becomes setpriv with the same user, group and HOME, and
    `claude` the command given. Its `chown -R /workspace`, run as the project's
    owner, changes no owner but visits every entry (one fchownat each, which
    also sets the entry's ctime)."""
    text = SEED_ENTRYPOINT.read_text()
    if not text.endswith(SEED_SUDO):
        raise BenchError(f"{SEED_ENTRYPOINT} no longer ends with the article's sudo line")
    path.write_text(text[: -len(SEED_SUDO)] + SEED_SETPRIV)
    path.chmod(0o755)


XDG_SUBDIRS = {"XDG_DATA_HOME": "data", "XDG_STATE_HOME": "state", "XDG_CACHE_HOME": "cache"}


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"u{os.getuid()}"


def measure(sizes: Sequence[str], runs: dict[str, int], cache: Path, say: Callable[[str], None]) -> Result:
    found = fixtures.ensure(list(sizes), cache, say=say)
    for fixture in found.values():
        say(f"fixture {fixture.label}: {fixture.path}")
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        warm = root / "warm"
        env = isolated_env(warm) | {"XDG_CACHE_HOME": str(warm / "cache")}
        (warm / "cache").mkdir()
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        image = subprocess.run([HUTCH, "-q", "build"], env=env, cwd=elsewhere, check=True, text=True,
                               stdout=subprocess.PIPE, timeout=BUILD_TIMEOUT).stdout.split()[-1]  # fmt: skip
        subprocess.run([HUTCH, "-q", "exec", "--", "true"], env=env, cwd=elsewhere, check=True,
                       capture_output=True, timeout=RUN_TIMEOUT)  # fmt: skip
        # A user who has used hutch, but not in these projects: the cold runs' state.
        template = root / "template"
        template.mkdir()
        for sub in XDG_SUBDIRS.values():
            shutil.copytree(warm / sub, template / sub, symlinks=True)
        socket_dir = root / "sock"
        listener = proxy_stand_in(socket_dir)
        seed_entrypoint(root / "seed-entrypoint.sh")
        try:
            results: list[SizeResult] = []
            errors: dict[str, str] = {}
            for size in sizes:
                try:
                    results.append(
                        measure_size(found[size], runs[size], image, root, template, socket_dir, say)
                    )
                except BenchError as err:
                    errors[size] = str(err)
                    say(f"{size} failed: {err}")
        finally:
            listener.close()
    return Result(image, results, errors)


# -- the rows ------------------------------------------------------------------------


class Line(NamedTuple):
    """One row of bench/run's table (suite.Row's fields, in order)."""

    metric: str
    unit: str
    hutch: float | None
    baseline: float | None
    baseline_name: str
    ratio: float | None
    target: str
    passed: bool | None
    note: str = ""


def lines(result: Result) -> list[Line]:
    out: list[Line] = []
    for r in result.sizes:
        size = f"{r.name} ({r.entries:,})"
        bare = r.med("bare")
        load = f"load {median(r.loads):.1f} ({min(r.loads):.1f}-{max(r.loads):.1f})"
        spread = (f"p90 hutch {p90(r.times('hutch')):.3f}s, bare {p90(r.times('bare')):.3f}s; "
                  f"CPU hutch {r.cpu('hutch'):.2f}s, docker client {r.cpu('bare'):.2f}s; "
                  f"{r.runs} rounds, {load}")  # fmt: skip
        if r.failures:
            spread += f"; {len(r.failures)} failed run(s) tried again, first: {r.failures[0][-160:]}"
        ratio = r.ratio("hutch", "bare")
        limit = WARM_TARGET.get(r.name)
        out.append(Line(
            f"project {size}: warm exec -- true", "s", r.med("hutch"), bare,
            "bare docker run --network none, project mounted", ratio,
            f"<= {limit:.2f}" if limit else "report", ratio <= limit if limit else None, spread,
        ))  # fmt: skip
        out.append(Line(
            f"project {size}: warm, vs hutch's own argv", "s", r.med("hutch"), r.med("bare hutch-argv"),
            "bare docker run with hutch's --dry-run argv", r.ratio("hutch", "bare hutch-argv"), "report",
            None, f"hutch masks {r.masked} path(s) here",
        ))  # fmt: skip
        ratio = r.ratio("hutch cold", "seed")
        out.append(Line(
            f"project {size}: first launch (cold)", "s", r.med("hutch cold"), r.med("seed"),
            "seed launcher (chown -R + docker run)", ratio, "<= 1.00", ratio <= 1.0,
            f"cold {r.ratio('hutch cold', 'bare cold'):.2f}x bare, seed {r.ratio('seed', 'bare cold'):.2f}x "
            f"bare ({r.med('bare cold'):.3f}s); p90 cold {p90(r.times('hutch cold')):.3f}s, "
            f"seed {p90(r.times('seed')):.3f}s; CPU cold {r.cpu('hutch cold'):.2f}s",
        ))  # fmt: skip
        bare_tail = r.tail("bare end")
        extra = r.after_exit_extra()
        limit_s = END_TARGET_S.get(r.name)
        out.append(Line(
            f"project {size}: end of session, 10 files changed", "s", median(extra), median(bare_tail),
            "bare run: last output to exit", None,
            f"<= {limit_s * 1000:.0f} ms extra" if limit_s else "report",
            median(extra) <= limit_s if limit_s else None,
            f"hutch's extra after the container exits (p90 {p90(extra) * 1000:.0f} ms; "
            f"{median(r.after_exit_extra('bare hutch-argv end')) * 1000:.0f} ms against a bare run "
            "with hutch's engine argv, which leaves out its flags' teardown); "
            f"before the command starts: {r.before_start_extra() * 1000:.0f} ms extra "
            f"({r.before_start_extra('bare hutch-argv end') * 1000:.0f} ms against hutch's argv); "
            f"whole run {r.ratio('hutch end', 'bare end'):.2f}x bare",
        ))  # fmt: skip
        rss = r.peak_rss("hutch")
        limit_mib = RSS_TARGET_MIB.get(r.name)
        out.append(Line(
            f"project {size}: peak RSS", "MiB", rss, r.peak_rss("bare"), "docker client (bare runs)",
            None, f"<= {limit_mib:.0f} MiB" if limit_mib else "report",
            rss <= limit_mib if limit_mib else None,
            "ru_maxrss of hutch and the children it waited for",
        ))  # fmt: skip
    return out


def summary(result: Result) -> dict[str, object]:
    """Medians, p90s and every sample, for the JSON file."""
    sizes: dict[str, object] = {}
    for r in result.sizes:
        sizes[r.name] = {
            "entries": r.entries, "path": r.path, "runs": r.runs, "masked": r.masked, "loads": r.loads,
            "failures": r.failures,
            "warnings": r.warnings,
            "median_s": {n: r.med(n) for n in r.samples}, "p90_s": {n: p90(r.times(n)) for n in r.samples},
            "median_cpu_s": {n: r.cpu(n) for n in r.samples},
            "after_exit_extra_s": r.after_exit_extra(), "before_start_extra_s": r.before_start_extra(),
            "after_exit_extra_vs_argv_s": r.after_exit_extra("bare hutch-argv end"),
            "before_start_extra_vs_argv_s": r.before_start_extra("bare hutch-argv end"),
            "samples": {n: [asdict(s) for s in ss] for n, ss in r.samples.items()},
        }  # fmt: skip
    return {"image": result.image, "sizes": sizes, "errors": result.errors}


def size_list(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    for name in names:
        if name not in SIZES:
            raise argparse.ArgumentTypeError(f"unknown size {name!r}: choose from {', '.join(SIZES)}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive count")
    return value


def runs_for(sizes: Sequence[str], runs: int | None, quick: bool) -> dict[str, int]:
    return {s: runs or (QUICK_RUNS if quick else RUNS[s]) for s in sizes}


def main(argv: list[str] | None = None) -> int:
    from suite import Row, table  # the table's format is bench/run's

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes {','.join(QUICK_SIZES)}, {QUICK_RUNS} rounds each")  # fmt: skip
    parser.add_argument("--sizes", type=size_list, help=f"comma-separated, of {','.join(SIZES)}")
    parser.add_argument("--runs", type=_positive, help=f"rounds per size (default {RUNS})")
    parser.add_argument("--fixtures", type=Path, help="fixture cache (default: see bench/fixtures.py)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)

    def say(message: str) -> None:
        print(f"project bench: {message}", file=sys.stderr, flush=True)

    result = measure(
        sizes, runs_for(sizes, args.runs, args.quick), args.fixtures or fixtures.default_dir(), say
    )
    rows = lines(result)
    print(table([Row(*line) for line in rows]))
    for line in rows:
        if line.note:
            print(f"- {line.metric}: {line.note}")
    for size, error in result.errors.items():
        print(f"- ERROR at {size}: {error}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [line._asdict() for line in rows], **summary(result)},
                                        indent=2) + "\n")  # fmt: skip
    return 1 if result.errors or any(line.passed is False for line in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
