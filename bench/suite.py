"""hutch against its baselines, measured side by side in one run: one table.

    bench/run [--quick] [--only NAME ...] [--runs N] [--build-rounds N] [--json PATH]
              [--project-sizes LIST] [--project-runs N] [--fixtures DIR]

Every metric is a ratio against a baseline timed on the same machine in the
same run, interleaved with it where it is cheap enough to repeat (medians of
per-round ratios). Sections (for --only): startup, uptodate, launch, build,
proxy, scan, project. --quick skips `build` (two cold image builds, minutes
each) and runs `project` (bench/project_launch.py) on its quick sizes.

hutch always runs with XDG_DATA_HOME/STATE/CONFIG in temp dirs. The seed image
is tagged hutch-bench-seed:* and removed at the end, as is the image of the
simulated agent update; nothing else in the engine is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import build_bench  # noqa: E402  (sibling scripts, not a package)
import fixtures  # noqa: E402
import launch_bench  # noqa: E402
import project_launch  # noqa: E402
from launch_bench import HUTCH, interleaved, isolated_env, paired_ratio  # noqa: E402

SECTIONS = ("startup", "uptodate", "launch", "build", "proxy", "scan", "project")
RESULTS = BENCH / "results"
BUILD_TIMEOUT = 1800.0
SUB_BENCH_TIMEOUT = 1200.0


class BenchError(Exception):
    """A section could not measure what it set out to."""


@dataclass
class Row:
    metric: str
    unit: str  # "s", "ms", "B", "MiB/s"
    hutch: float | None
    baseline: float | None
    baseline_name: str
    ratio: float | None
    target: str  # shown as is: "<= 1.15", "report", ...
    passed: bool | None  # None: reported, no target
    note: str = ""


@dataclass
class Report:
    date: str
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(
    argv: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, check=True, text=True, capture_output=True,
                          timeout=timeout)  # fmt: skip


# -- the machine -----------------------------------------------------------------


def machine() -> dict[str, str]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?"
    try:
        info = run(["docker", "info", "--format",
                    "{{.ServerVersion}}|{{.Driver}}"], 60).stdout.strip().split("|")  # fmt: skip
        docker = f"{info[0]} ({info[1]})"
    except (OSError, subprocess.SubprocessError):
        docker = "unavailable"
    try:
        run(["docker", "buildx", "version"], 30)
        builder = "BuildKit"
    except (OSError, subprocess.SubprocessError):
        builder = "classic builder"
    try:
        commit = run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], 30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    try:
        hutch = run([HUTCH, "--version"], 30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        hutch = "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory": mem,
        "kernel": f"{platform.system()} {platform.release()}",
        "docker": docker,
        "builder": builder,
        "python": platform.python_version(),
        "hutch": f"{hutch} @ {commit}",
    }


# -- start-up, up-to-date check ------------------------------------------------------


def bench_startup(report: Report, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        env = isolated_env(root)
        commands = {
            "hutch --help": [HUTCH, "--help"],
            "hutch --version": [HUTCH, "--version"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        samples = interleaved(commands, runs, env, root, warmup=2)
    report.details["startup"] = samples
    base = statistics.median(samples["python -c pass"])
    for name in ("hutch --help", "hutch --version"):
        report.rows.append(Row(
            f"start-up: {name}", "s", statistics.median(samples[name]), base, "python -c pass",
            paired_ratio(samples[name], samples["python -c pass"]), "report", None,
        ))  # fmt: skip


def bench_uptodate(report: Report, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        env = isolated_env(root)
        tag = run([HUTCH, "-q", "build"], BUILD_TIMEOUT, env=env, cwd=project).stdout.split()[-1]
        commands = {
            "hutch build": [HUTCH, "-q", "build"],
            "docker image inspect": ["docker", "image", "inspect", tag],
        }
        samples = interleaved(commands, runs, env, project, warmup=2)
    report.details["uptodate"] = {"image": tag, "samples": samples}
    ratio = paired_ratio(samples["hutch build"], samples["docker image inspect"])
    report.rows.append(Row(
        "up-to-date check: hutch build", "s", statistics.median(samples["hutch build"]),
        statistics.median(samples["docker image inspect"]), "docker image inspect TAG",
        ratio, "<= 2.00", ratio <= 2.0,
    ))  # fmt: skip


# -- launch --------------------------------------------------------------------------


def bench_launch(report: Report, runs: int) -> None:
    result = launch_bench.measure(runs, ("open", "allowlist"))
    report.details["launch"] = {
        "image": result.image, "runs": runs, "samples": result.samples,
        "bare_argv": result.bare_argv,
    }  # fmt: skip
    bare = result.median("bare open")
    ratio = result.ratio("hutch open", "bare open")
    report.rows.append(Row(
        "launch: exec --network open -- true", "s", result.median("hutch open"), bare,
        "bare docker run, same image+mounts", ratio, "<= 1.15", ratio <= 1.15,
    ))  # fmt: skip
    ratio = result.ratio("hutch allowlist", "bare open")
    same_flags = result.ratio("hutch allowlist", "bare allowlist")
    report.rows.append(Row(
        "launch: exec --network allowlist -- true", "s", result.median("hutch allowlist"), bare,
        "bare docker run, same image+mounts", ratio, "<= 1.60", ratio <= 1.6,
        f"{same_flags:.2f}x a bare run with hutch's allowlist engine flags "
        f"(--network none + socket mount, {result.median('bare allowlist'):.3f}s)",
    ))  # fmt: skip
    chart = launch_chart(result.samples)
    if chart:
        report.notes.append(chart)


def launch_chart(samples: dict[str, list[float]]) -> str:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "no launch chart: matplotlib is not importable (optional)"
    order = ["bare open", "hutch open", "bare allowlist", "hutch allowlist"]
    names = [n for n in order if n in samples]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    data = [[s * 1000 for s in samples[n]] for n in names]
    try:
        ax.boxplot(data, orientation="horizontal", showfliers=False)
    except TypeError:  # matplotlib < 3.10
        ax.boxplot(data, vert=False, showfliers=False)
    for y, name in enumerate(names, start=1):
        xs = [s * 1000 for s in samples[name]]
        ys = [y + (i % 7 - 3) * 0.03 for i in range(len(xs))]
        ax.scatter(xs, ys, s=10, alpha=0.6, color="tab:orange" if "hutch" in name else "tab:blue")
    labels = {
        "bare open": "docker run (bare)",
        "hutch open": "hutch exec --network open",
        "bare allowlist": "docker run, allowlist flags (bare)",
        "hutch allowlist": "hutch exec --network allowlist",
    }
    ax.set_yticks(range(1, len(names) + 1), [labels[n] for n in names])
    ax.set_xlabel("launch of `true`, ms (each dot one run; boxes: quartiles)")
    ax.set_title(f"Launch time, {len(samples[names[0]])} interleaved rounds")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = RESULTS / "launch.png"
    fig.savefig(out)
    plt.close(fig)
    return f"launch chart: {out.relative_to(BENCH.parent)}"


# -- cold builds, size, agent update ---------------------------------------------------


def bench_build(report: Report, logs: Path, rounds: int) -> None:
    buildkit = report.machine.get("builder") == "BuildKit"
    b = build_bench.measure(logs, buildkit, rounds, log=say)
    report.details["build"] = asdict(b)
    ratio = b.hutch_cold_s / b.seed_cold_s
    report.rows.append(Row(
        f"cold image build (--no-cache, {len(b.hutch_runs_s)}x)", "s", b.hutch_cold_s,
        b.seed_cold_s, "seed recipe, same base", ratio, "<= 1.00", ratio <= 1.0,
        f"slow steps: hutch {build_bench.slow_steps(b.hutch_steps, 5)}; "
        f"seed {build_bench.slow_steps(b.seed_steps, 5)}",
    ))  # fmt: skip
    ratio = b.hutch_size_b / b.seed_size_b
    report.rows.append(Row("image size", "B", b.hutch_size_b, b.seed_size_b,
                           "seed recipe, same base", ratio, "<= 1.00", ratio <= 1.0))  # fmt: skip
    u = b.update
    report.rows.append(Row(
        f"rebuild after agent update ({u.pinned_from} -> {u.pinned_to})", "s", u.seconds,
        b.hutch_cold_s, "hutch cold build", u.seconds / b.hutch_cold_s, "agent layer only",
        u.only_agent_layer,
        f"{len(u.reran)} layer(s) reran: {'; '.join(r[:60] for r in u.reran) or 'none'}; "
        f"{u.cached_layers} from cache (apt layer {'cached' if u.apt_cached else 'REBUILT'})",
    ))  # fmt: skip
    report.notes.append("seed recipe substitutions (bench/seed/Dockerfile.claude): "
                        + "; ".join(build_bench.SEED_SUBSTITUTIONS))  # fmt: skip


# -- the other benches: proxy, secret scan ---------------------------------------------


def sub_bench(
    script: str, args: list[str], logs: Path, ok_codes: tuple[int, ...] = (0,)
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        out = Path(tmp) / "out.json"
        with tempfile.TemporaryDirectory(prefix="hutch-bench-") as xdg:
            env = isolated_env(Path(xdg))
            done = subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out)],
                                  env=env, capture_output=True, text=True,
                                  timeout=SUB_BENCH_TIMEOUT, check=False)  # fmt: skip
        (logs / f"{Path(script).stem}.log").write_text(done.stdout + done.stderr)
        if done.returncode not in ok_codes or not out.exists():
            raise BenchError(f"{script} exited {done.returncode}: {done.stderr.strip()[-400:]}")
        data: dict[str, object] = json.loads(out.read_text())
        data["exit_status"] = done.returncode
        return data


def _f(data: dict[str, object], key: str) -> float:
    value = data[key]
    assert isinstance(value, int | float), key
    return float(value)


def bench_proxy(report: Report, logs: Path) -> None:
    data = sub_bench("proxy_bench.py", [], logs)
    report.details["proxy"] = data
    ratio = _f(data, "ratio")
    report.rows.append(Row(
        f"egress proxy throughput ({data['mib']} MiB)", "MiB/s", _f(data, "proxy_mib_s"),
        _f(data, "direct_mib_s"), "direct loopback", ratio, ">= 0.50", ratio >= 0.5,
    ))  # fmt: skip
    report.rows.append(Row(
        f"egress proxy connect p50 ({data['conns']} concurrent)", "ms", _f(data, "proxy_p50_ms"),
        _f(data, "direct_p50_ms"), "direct loopback",
        _f(data, "proxy_p50_ms") / _f(data, "direct_p50_ms"), "report", None,
        f"added p50 {_f(data, 'added_p50_ms'):.2f} ms, p95 {_f(data, 'added_p95_ms'):.2f} ms; "
        f"serial p50 {_f(data, 'serial_proxy_p50_ms'):.2f} vs {_f(data, 'serial_direct_p50_ms'):.2f} ms",
    ))  # fmt: skip


def bench_scan(report: Report, logs: Path) -> None:
    # The scan bench exits 1 when it misses its target: still a result to show.
    data = sub_bench("secret_scan_bench.py", [], logs, ok_codes=(0, 1))
    report.details["scan"] = {k: v for k, v in data.items() if k != "runs_s"}
    median = data["median_s"]
    assert isinstance(median, dict)
    scan_s, find_s = float(median["scan"]), float(median["find"])
    correct = bool(data["correct"])
    report.rows.append(Row(
        f"secret scan ({data['files']} files)", "s", scan_s, find_s, "find -type f | wc -l",
        scan_s / find_s, "< 1 s", scan_s < 1.0 and correct,
        f"{float(median['scan']) / float(median['find_links']):.2f}x `find -links +1`"
        + ("" if correct else "; WRONG RESULT"),
    ))  # fmt: skip


# -- project sizes: launch, first launch, end of session, memory -------------------------


def bench_project(report: Report, sizes: list[str], runs: dict[str, int], cache: Path) -> None:
    result = project_launch.measure(sizes, runs, cache, say)
    report.details["project"] = project_launch.summary(result)
    for line in project_launch.lines(result):
        report.rows.append(Row(*line))
    for size, error in result.errors.items():
        report.errors[f"project {size}"] = error


# -- where `hutch exec` spends its imports -------------------------------------------------


def import_profile(top: int = 6, runs: int = 5) -> list[tuple[str, float]]:
    """The heaviest imports (self time, median of `runs`) of `hutch exec
    --network open -- true`, in a state where the image is built and the agent
    pinned (as on every launch but the first); the last entry is the total."""
    per_module: dict[str, list[float]] = {}
    totals: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hutch-bench-") as tmp:
        root = Path(tmp)
        env = isolated_env(root)
        run([HUTCH, "-q", "build"], BUILD_TIMEOUT, env=env, cwd=root)
        code = "import sys; from hutch.cli import main; sys.exit(main())"
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code, "-q", "exec", "--network",
                 "open", "--", "true"],
                env=env, cwd=root, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            total = 0.0
            for line in done.stderr.splitlines():
                if m := re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line):
                    ms = int(m.group(1)) / 1000
                    per_module.setdefault(m.group(2), []).append(ms)
                    total += ms
            totals.append(total)
    medians = {name: statistics.median(v + [0.0] * (runs - len(v))) for name, v in per_module.items()}
    heaviest = sorted(medians.items(), key=lambda item: -item[1])[:top]
    return [*heaviest, ("total", statistics.median(totals))]


# -- output ------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.0f} {unit}"


def table(rows: list[Row]) -> str:
    head = ("metric", "hutch", "baseline", "ratio", "target", "pass")
    body = [
        (r.metric, fmt(r.hutch, r.unit), fmt(r.baseline, r.unit),
         "-" if r.ratio is None else f"{r.ratio:.2f}", r.target,
         "report" if r.passed is None else ("yes" if r.passed else "NO"))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in body]  # fmt: skip
    return "\n".join(lines)


def render(report: Report) -> str:
    m = report.machine
    out = [
        f"hutch bench  {report.date}",
        f"machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, {m['kernel']}, "
        f"Docker {m['docker']}, {m['builder']}, Python {m['python']}, {m['hutch']}",
        "",
        table(report.rows),
        "",
        "ratio = hutch / baseline (proxy throughput: proxy / direct); timings are medians, "
        "ratios the median of per-round ratios of interleaved runs",
    ]
    for r in report.rows:
        if r.note:
            out.append(f"- {r.metric}: {r.note}")
    baselines: dict[str, list[str]] = {}
    for r in report.rows:
        baselines.setdefault(r.baseline_name, []).append(r.metric.split(" (")[0])
    for name, metrics in baselines.items():
        out.append(f"- baseline for {'; '.join(metrics)}: {name}")
    out += [f"- {n}" for n in report.notes]
    for name, error in report.errors.items():
        out.append(f"- ERROR in {name}: {error}")
    return "\n".join(out)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive count")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the cold image builds")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--runs", type=positive, default=21, help="rounds of interleaved runs for timed sections (default 21)"
    )
    parser.add_argument(
        "--build-rounds",
        type=positive,
        default=1,
        metavar="N",
        help="cold builds of each recipe, alternating which goes first (default 1)",
    )
    parser.add_argument("--project-sizes", type=project_launch.size_list, metavar="LIST",
                        help="project fixtures, comma-separated, of "
                        f"{','.join(project_launch.SIZES)} (default: all; --quick: "
                        f"{','.join(project_launch.QUICK_SIZES)})")  # fmt: skip
    parser.add_argument("--project-runs", type=positive, metavar="N",
                        help=f"rounds per project size (default {project_launch.RUNS}; "
                        f"--quick: {project_launch.QUICK_RUNS})")  # fmt: skip
    parser.add_argument("--fixtures", type=Path, default=None,
                        help="project fixture cache (default: see bench/fixtures.py)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json",
                        help="where to write the results (default bench/results/latest.json)")  # fmt: skip
    args = parser.parse_args(argv)
    if not Path(HUTCH).exists():
        print(f"bench/run: no hutch next to {sys.executable}; run it with the venv that has "
              "hutch installed, e.g. PYTHON=/path/to/venv/bin/python bench/run",
              file=sys.stderr)  # fmt: skip
        return 2
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS)]
    if args.quick and not args.only:
        sections.remove("build")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = RESULTS / "logs"
    logs.mkdir(exist_ok=True)
    report = Report(dt.datetime.now().astimezone().isoformat(timespec="seconds"), machine())
    say(f"sections: {', '.join(sections)}; logs in {logs}")
    project_sizes = args.project_sizes or list(
        project_launch.QUICK_SIZES if args.quick else project_launch.SIZES
    )
    project_runs = project_launch.runs_for(project_sizes, args.project_runs, args.quick)
    steps: dict[str, Callable[[], None]] = {
        "startup": lambda: bench_startup(report, args.runs),
        "uptodate": lambda: bench_uptodate(report, args.runs),
        "launch": lambda: bench_launch(report, args.runs),
        "build": lambda: bench_build(report, logs, args.build_rounds),
        "proxy": lambda: bench_proxy(report, logs),
        "scan": lambda: bench_scan(report, logs),
        "project": lambda: bench_project(
            report, project_sizes, project_runs, args.fixtures or fixtures.default_dir()
        ),
    }
    for name in sections:
        say(f"{name} ...")
        started = time.perf_counter()
        try:
            steps[name]()
        except (BenchError, build_bench.BuildBenchError, project_launch.BenchError,
                fixtures.FixtureError, OSError, ValueError, KeyError,
                subprocess.SubprocessError) as err:  # fmt: skip
            detail = getattr(err, "stderr", None) or ""
            report.errors[name] = f"{err} {str(detail).strip()[-300:]}".strip()
            say(f"{name} failed: {report.errors[name]}")
        say(f"{name} done in {time.perf_counter() - started:.0f}s")
    if "launch" in sections:
        top = import_profile()
        report.details["exec_imports_ms"] = top
        report.notes.append("`hutch exec` import time (self ms, median of 5): " + ", ".join(
            f"{name} {ms:.1f}" for name, ms in top))  # fmt: skip
    text = render(report)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"table": text, **asdict(report)}, indent=2, default=str) + "\n")  # fmt: skip
    say(f"wrote {args.json}")
    failed = any(r.passed is False for r in report.rows)
    return 1 if failed or report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
