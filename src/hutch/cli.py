"""Command line: flags -> one core call -> exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hutch import __version__
from hutch.errors import EXIT_INTERRUPTED, HutchError, UsageError

if TYPE_CHECKING:
    from hutch.config.load import Layer
    from hutch.session import Workspace

COMMANDS = (
    "run", "exec", "shell", "build", "update", "agents", "doctor",
    "ps", "stop", "gc", "audit", "config",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 already; say what to do next as every error does.
        self.print_usage(sys.stderr)
        print(f"hutch: {message}\n  hint: see `hutch {self.prog.split()[-1]} --help`",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)


def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--engine", choices=("docker", "podman", "auto"), default=default,
                        help="container engine (default: config, HUTCH_ENGINE, or detected)")
    parser.add_argument("--project", type=Path, default=default, metavar="DIR",
                        help="project root (default: nearest hutch.toml, git top level, or .)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="no progress or summary lines")
    parser.add_argument("--debug", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="show engine commands and tracebacks")  # fmt: skip


def _run_opts(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sandbox options")
    g.add_argument("--network", choices=("allowlist", "open", "none"),
                   help="egress policy for this run")
    g.add_argument("--allow", action="append", default=[], metavar="HOST[:PORT]",
                   help="also allow this host (repeatable)")
    g.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="let a host variable in, or set one (repeatable)")
    g.add_argument("--mount", action="append", default=[], metavar="SRC:DST[:ro|rw]",
                   help="extra mount (repeatable)")
    g.add_argument("--no-mask", action="store_true", help="do not mask secret files (warns)")
    g.add_argument("--memory", metavar="SIZE", help='memory limit, e.g. "4g"')
    g.add_argument("--cpus", type=float, metavar="N", help="CPU limit")
    g.add_argument("--pids", type=int, metavar="N", help="process limit")
    g.add_argument("--dry-run", action="store_true",
                   help="print the engine command instead of running it")
    g.add_argument("--force", action="store_true",
                   help="allow / or the home directory itself as the project")  # fmt: skip


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, other commands get no arguments (start-up is lean)."""
    parser = Parser(prog="hutch", description="Run AI coding agents in a locked container.")
    parser.add_argument("--version", action="version", version=f"hutch {__version__}")
    _globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser | None:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            return None
        _globals(p, suppress=True)
        return p

    if p := add("run", "run the agent in the sandbox for this project (the default)"):
        p.add_argument("agent", nargs="?", help="agent name (default: config `agent`)")
        _run_opts(p)
    if p := add("exec", "run any command in exactly the sandbox the agent would get"):
        _run_opts(p)
        p.add_argument("--agent", help="whose sandbox (default: config `agent`)")
        p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
        p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
        p.add_argument("cmd", nargs="*", help="the command (after --)")
    if p := add("shell", "an interactive shell in the sandbox"):
        p.add_argument("agent", nargs="?")
        _run_opts(p)
    if p := add("build", "build the image if its recipe changed"):
        p.add_argument("agent", nargs="?")
        p.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    if p := add("update", "rebuild with the agent's newest release"):
        p.add_argument("agent", nargs="?")
        p.add_argument("--all", action="store_true", help="every agent with an image")
    add("agents", "built-in and configured agents, image state")
    add("doctor", "check the engine and setup, print fixes")
    add("ps", "running sessions")
    if p := add("stop", "stop a session"):
        p.add_argument("session")
    add("gc", "remove anything hutch left behind")
    if p := add("audit", "what a session was denied or had masked"):
        p.add_argument("session", nargs="?")
        p.add_argument("--json", action="store_true")
    if p := add("config", "show the effective config, or write a template"):
        p.add_argument("action", choices=("show", "init", "trust"),
                       help="trust: let this project's hutch.toml widen the sandbox")
        p.add_argument("--force", action="store_true", help="config init: replace hutch.toml")
    return parser


def _command_index(args: Sequence[str]) -> int | None:
    """Where the command word is (or would go); None for --help/--version alone."""
    index = 0
    takes_value = {"--engine", "--project"}
    switches = {"-q", "--quiet", "--debug"}
    while index < len(args):
        arg = args[index]
        if arg in ("-h", "--help", "--version"):
            return None
        if arg in takes_value:
            index += 2
        elif arg in switches or arg.split("=", 1)[0] in takes_value:
            index += 1
        else:
            break
    return index


def split_argv(argv: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    """Insert the implicit `run` and split off what follows `--`."""
    args = list(argv)
    tail: tuple[str, ...] = ()
    if "--" in args:
        cut = args.index("--")
        args, tail = args[:cut], tuple(args[cut + 1 :])
    index = _command_index(args)
    if index is None:
        return args, tail
    if index >= len(args) or args[index] not in COMMANDS:
        args.insert(index, "run")
    return args, tail


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args, tail = split_argv(raw)
    at = _command_index(args)
    ns = build_parser(args[at] if at is not None and at < len(args) else None).parse_args(args)
    debug = bool(getattr(ns, "debug", False))
    try:
        return dispatch(ns, tail)
    except HutchError as err:
        print(f"hutch: {err}", file=sys.stderr)
        if debug:
            raise
        return err.exit_code
    except KeyboardInterrupt:
        print("hutch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hutch audit --json | head`): not an error to report.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _flag_layer(ns: argparse.Namespace) -> Layer:
    from hutch.config.load import Layer
    from hutch.config.schema import SCHEMA, ConfigValue

    values: dict[str, ConfigValue] = {}
    if getattr(ns, "engine", None):
        values["engine"] = ns.engine
    pairs = (
        ("network", "network.mode"),
        ("memory", "sandbox.memory"),
        ("cpus", "sandbox.cpus"),
        ("pids", "sandbox.pids"),
    )
    for attr, key in pairs:
        value = getattr(ns, attr, None)
        if value is not None:
            values[key] = SCHEMA[key].validate(value, f"--{attr}")
    for attr, key in (("allow", "network.allow"), ("env", "sandbox.env"), ("mount", "sandbox.mounts")):
        items = getattr(ns, attr, None)
        if items:
            values[key] = SCHEMA[key].validate(list(items), f"--{attr}")
    return Layer("flag", values)


def _workspace(ns: argparse.Namespace) -> Workspace:
    from hutch.config import load_settings
    from hutch.engines import choose
    from hutch.paths import Dirs, find_project_root
    from hutch.session import Workspace

    cwd = Path(os.getcwd())
    project = find_project_root(cwd, getattr(ns, "project", None))
    dirs = Dirs.from_env()
    settings = load_settings(dirs, project, _flag_layer(ns))
    engine = choose(settings.engine)
    return Workspace(dirs, project, cwd, settings, engine, quiet=bool(ns.quiet))


def dispatch(ns: argparse.Namespace, tail: tuple[str, ...]) -> int:
    command = ns.command
    if command in ("run", "exec", "shell"):
        from hutch.commands.run import RunRequest, execute

        if command == "exec":
            cmd = tuple(ns.cmd) + tail
            if not cmd:
                raise UsageError("exec needs a command", "hutch exec -- CMD [ARGS]")
            request = RunRequest(ns.agent, cmd, (), ns.interactive, ns.tty,
                                 ns.dry_run, ns.force, ns.no_mask)  # fmt: skip
        elif command == "shell":
            request = RunRequest(ns.agent, ("bash", "-l"), (), True, None,
                                 ns.dry_run, ns.force, ns.no_mask)  # fmt: skip
        else:
            request = RunRequest(ns.agent, (), tail, None, None,
                                 ns.dry_run, ns.force, ns.no_mask)  # fmt: skip
        return execute(_workspace(ns), request)
    if tail:
        raise UsageError(f"`hutch {command}` takes no arguments after --")
    from hutch.commands import manage

    if command == "build":
        return manage.build(_workspace(ns), ns.agent, ns.no_cache)
    if command == "update":
        return manage.update(_workspace(ns), ns.agent, ns.all)
    if command == "agents":
        return manage.agents(_workspace(ns))
    if command == "doctor":
        return manage.doctor(ns)
    if command == "ps":
        return manage.ps(_workspace(ns))
    if command == "stop":
        return manage.stop(_workspace(ns), ns.session)
    if command == "gc":
        return manage.gc(_workspace(ns))
    if command == "audit":
        return manage.audit(_workspace(ns), ns.session, ns.json)
    if command == "config":
        if ns.action == "show":
            return manage.config_show(_workspace(ns))
        if ns.action == "trust":
            return manage.config_trust(_workspace(ns))
        return manage.config_init(ns, ns.force)
    raise UsageError(f"unknown command {command!r}")
