"""Command line: flags -> one core call -> exit code.

The flags are a table (GLOBAL_OPTIONS, COMMANDS) that argparse is built from.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from hutch import __version__
from hutch.errors import EXIT_INTERRUPTED, HutchError, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

    from hutch.config.load import Layer
    from hutch.session import Workspace

# An option: (flags, kind, help, metavar). kind is "flag" (a switch), "str",
# "int", "float", "list" (repeatable) or a tuple of choices.
Option = tuple[tuple[str, ...], str | tuple[str, ...], str, str | None]
# A positional: (name, nargs, help, choices); nargs is "?", "*" or "1".
Positional = tuple[str, str, str, tuple[str, ...] | None]

GLOBAL_OPTIONS: tuple[Option, ...] = (
    (("--engine",), ("docker", "podman", "auto"),
     "container engine (default: config, HUTCH_ENGINE, or detected)", None),
    (("--project",), "str", "project root (default: nearest hutch.toml, git top level, or .)",
     "DIR"),
    (("-q", "--quiet"), "flag", "no progress or summary lines", None),
    (("--debug",), "flag", "show engine commands and tracebacks", None),
)  # fmt: skip

SANDBOX_OPTIONS: tuple[Option, ...] = (
    (("--network",), ("allowlist", "open", "none"), "egress policy for this run", None),
    (("--allow",), "list", "also allow this host (repeatable)", "HOST[:PORT]"),
    (("--env",), "list", "let a host variable in, or set one (repeatable)", "NAME[=VALUE]"),
    (("--mount",), "list", "extra mount (repeatable)", "SRC:DST[:ro|rw]"),
    (("--no-mask",), "flag", "do not mask secret files (warns)", None),
    (("--memory",), "str", 'memory limit, e.g. "4g"', "SIZE"),
    (("--cpus",), "float", "CPU limit", "N"),
    (("--pids",), "int", "process limit", "N"),
    (("--dry-run",), "flag", "print the engine command instead of running it", None),
    (("--force",), "flag", "allow / or the home directory itself as the project", None),
)  # fmt: skip

# name: (help, option groups as (title or None, options), positionals)
COMMANDS: dict[str, tuple[str, tuple[tuple[str | None, tuple[Option, ...]], ...],
                          tuple[Positional, ...]]] = {
    "run": ("run the agent in the sandbox for this project (the default)",
            (("sandbox options", SANDBOX_OPTIONS),),
            (("agent", "?", "agent name (default: config `agent`)", None),)),
    "exec": ("run any command in exactly the sandbox the agent would get",
             (("sandbox options", SANDBOX_OPTIONS),
              (None, ((("--agent",), "str", "whose sandbox (default: config `agent`)", None),
                      (("-i", "--interactive"), "flag", "keep stdin attached", None),
                      (("-t", "--tty"), "flag", "allocate a terminal", None)))),
             (("cmd", "*", "the command (after --)", None),)),
    "shell": ("an interactive shell in the sandbox",
              (("sandbox options", SANDBOX_OPTIONS),),
              (("agent", "?", "agent name (default: config `agent`)", None),)),
    "build": ("build the image if its recipe changed",
              ((None, ((("--no-cache",), "flag", "rebuild every layer", None),)),),
              (("agent", "?", "agent name (default: config `agent`)", None),)),
    "update": ("rebuild with the agent's newest release",
               ((None, ((("--all",), "flag", "every agent with an image", None),)),),
               (("agent", "?", "agent name (default: config `agent`)", None),)),
    "agents": ("built-in and configured agents, image state", (), ()),
    "doctor": ("check the engine and setup, print fixes", (), ()),
    "ps": ("running sessions", (), ()),
    "stop": ("stop a session", (), (("session", "1", "session id", None),)),
    "gc": ("remove anything hutch left behind", (), ()),
    "audit": ("what a session was denied or had masked",
              ((None, ((("--json",), "flag", "one JSON object per line", None),)),),
              (("session", "?", "session id (default: the latest)", None),)),
    "config": ("show the effective config, or write a template",
               ((None, ((("--force",), "flag", "config init: replace hutch.toml", None),)),),
               (("action", "1", "trust: let this project's hutch.toml widen the sandbox",
                 ("show", "init", "trust")),)),
}  # fmt: skip


class Args:
    """The parsed command line: the global options, and those of its command."""

    command: str
    engine: str | None
    project: str | None
    quiet: bool
    debug: bool
    agent: str | None
    cmd: list[str]
    interactive: bool
    tty: bool
    dry_run: bool
    force: bool
    no_mask: bool
    no_cache: bool
    all: bool
    session: str | None
    json: bool
    action: str


def _default(kind: str | tuple[str, ...]) -> object:
    return False if kind == "flag" else [] if kind == "list" else None


def _add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: tuple[Option, ...],
    suppress: bool = False,
) -> None:
    for flags, kind, help_text, metavar in options:
        default = argparse.SUPPRESS if suppress else _default(kind)
        if kind == "flag":
            parser.add_argument(*flags, action="store_true", default=default, help=help_text)
        elif kind == "list":
            parser.add_argument(*flags, action="append", default=default, metavar=metavar,
                                help=help_text)  # fmt: skip
        elif isinstance(kind, tuple):
            parser.add_argument(*flags, choices=kind, default=default, help=help_text)
        else:
            kinds: dict[str, type] = {"int": int, "float": float, "str": str}
            parser.add_argument(*flags, type=kinds[kind], default=default, metavar=metavar,
                                help=help_text)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """argparse over the command table."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            # argparse exits 2 already; say what to do next as every error does.
            self.print_usage(sys.stderr)
            print(f"hutch: {message}\n  hint: see `hutch {self.prog.split()[-1]} --help`",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)

    parser = Parser(prog="hutch", description="Run AI coding agents in a locked container.")
    parser.add_argument("--version", action="version", version=f"hutch {__version__}")
    _add_options(parser, GLOBAL_OPTIONS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (help_text, groups, positionals) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for pos, nargs, pos_help, choices in positionals:
            p.add_argument(pos, nargs=None if nargs == "1" else nargs, choices=choices,
                           help=pos_help)  # fmt: skip
        for title, options in groups:
            _add_options(p if title is None else p.add_argument_group(title), options)
        _add_options(p, GLOBAL_OPTIONS, suppress=True)
    return parser


def _command_index(args: Sequence[str]) -> int | None:
    """Where the command word is (or would go); None for --help/--version alone."""
    index = 0
    takes_value = {flag for flags, kind, _, _ in GLOBAL_OPTIONS if kind != "flag" for flag in flags}
    switches = {flag for flags, kind, _, _ in GLOBAL_OPTIONS if kind == "flag" for flag in flags}
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


def parse(args: Sequence[str]) -> Args:
    """argparse's reading (it exits 2 on a usage error)."""
    return build_parser().parse_args(args, namespace=Args())


def entry() -> NoReturn:
    """The `hutch` console script."""
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args, tail = split_argv(raw)
    ns = parse(args)
    debug = bool(getattr(ns, "debug", False))
    try:
        return dispatch(ns, args, tail)
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


def _flag_layer(ns: Args) -> Layer:
    from hutch.config.load import Layer
    from hutch.config.schema import SCHEMA, ConfigValue

    values: dict[str, ConfigValue] = {}
    if ns.engine:
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


def workspace(ns: Args) -> Workspace:
    from hutch.config import load_settings
    from hutch.engines import choose
    from hutch.paths import Dirs, find_project_root
    from hutch.session import Workspace

    cwd = os.getcwd()
    project = find_project_root(cwd, getattr(ns, "project", None))
    dirs = Dirs.from_env()
    settings = load_settings(dirs, project, _flag_layer(ns))
    engine = choose(settings.engine)
    return Workspace(dirs, project, cwd, settings, engine, quiet=bool(ns.quiet))


def dispatch(ns: Args, args: list[str], tail: tuple[str, ...]) -> int:
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
        return execute(workspace(ns), request)
    if tail:
        raise UsageError(f"`hutch {command}` takes no arguments after --")
    if command == "build":
        from hutch import stamp

        stamp_file = stamp.stamp_path(args, os.getcwd())
        if not ns.no_cache and (answer := stamp.check(stamp_file)) is not None:
            message, tag = answer
            if message:
                print(f"hutch: {message}", file=sys.stderr)
            print(tag)
            return 0
    from hutch.commands import manage

    if command == "build":
        return manage.build(workspace(ns), ns.agent, ns.no_cache, stamp_file, ns.project is not None)
    if command == "update":
        return manage.update(workspace(ns), ns.agent, ns.all)
    if command == "agents":
        return manage.agents(workspace(ns))
    if command == "doctor":
        return manage.doctor(lambda: workspace(ns))
    if command == "ps":
        return manage.ps(workspace(ns))
    if command == "stop":
        assert ns.session is not None  # a required positional of stop
        return manage.stop(workspace(ns), ns.session)
    if command == "gc":
        return manage.gc(workspace(ns))
    if command == "audit":
        return manage.audit(workspace(ns), ns.session, ns.json)
    if command == "config":
        if ns.action == "show":
            return manage.config_show(workspace(ns))
        if ns.action == "trust":
            return manage.config_trust(workspace(ns))
        return manage.config_init(ns.project, ns.quiet, ns.force)
    raise UsageError(f"unknown command {command!r}")
