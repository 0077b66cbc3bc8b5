"""Command line: flags -> one core call -> exit code.

Every command is a row of COMMANDS: its help, options and positionals (the
argparse parser is built from them) and the function that runs it. A new
command is a new row and a function in hutch.commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NamedTuple

from hutch import __version__
from hutch.engines import choices as engine_choices
from hutch.errors import EXIT_INTERRUPTED, HutchError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from hutch.config.load import Layer
    from hutch.workspace import Workspace


class Option(NamedTuple):
    flags: tuple[str, ...]
    # "flag" (a switch), "str", "int", "float", "list" (repeatable), "engine"
    # (a name in the engine registry, or "auto") or the choices.
    kind: str | tuple[str, ...]
    help: str
    metavar: str | None = None
    # The config key the option sets for this run ("list" options add to it).
    config: str | None = None


class Positional(NamedTuple):
    name: str
    nargs: str  # "?", "*" or "1"
    help: str
    choices: tuple[str, ...] | None = None


class Args(argparse.Namespace):
    """The parsed command line: the global options, and those of its command."""

    command: str
    argv: list[str]  # the command line before `--`, with the implicit `run`
    tail: tuple[str, ...]  # what follows `--`
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
    paths: list[str]
    json: bool
    action: str


class Command(NamedTuple):
    help: str
    run: Callable[[Args], int]
    options: tuple[tuple[str | None, tuple[Option, ...]], ...] = ()  # (group title, options)
    positionals: tuple[Positional, ...] = ()
    takes_tail: bool = False  # arguments after `--` are the command's


GLOBAL_OPTIONS = (
    Option(("--engine",), "engine", "container engine (default: config, HUTCH_ENGINE, "
           "or detected)", config="engine"),
    Option(("--project",), "str", "project root (default: nearest hutch.toml, git top level, or .)",
           "DIR"),
    Option(("-q", "--quiet"), "flag", "no progress or summary lines"),
    Option(("--debug",), "flag", "show engine commands and tracebacks"),
)  # fmt: skip

SANDBOX_OPTIONS = (
    Option(("--network",), ("allowlist", "open", "none"), "egress policy for this run",
           config="network.mode"),
    Option(("--allow",), "list", "also allow this host (repeatable)", "HOST[:PORT]",
           config="network.allow"),
    Option(("--env",), "list", "let a host variable in, or set one (repeatable)", "NAME[=VALUE]",
           config="sandbox.env"),
    Option(("--mount",), "list", "extra mount (repeatable)", "SRC:DST[:ro|rw]",
           config="sandbox.mounts"),
    Option(("--no-mask",), "flag", "do not mask secret files (warns)"),
    Option(("--memory",), "str", 'memory limit, e.g. "4g"', "SIZE", config="sandbox.memory"),
    Option(("--cpus",), "float", "CPU limit", "N", config="sandbox.cpus"),
    Option(("--pids",), "int", "process limit", "N", config="sandbox.pids"),
    Option(("--dry-run",), "flag", "print the engine command instead of running it"),
    Option(("--force",), "flag", "allow / or the home directory itself as the project"),
)  # fmt: skip

AGENT = Positional("agent", "?", "agent name (default: config `agent`)")


# -- what each command runs -----------------------------------------------------------


def workspace(ns: Args) -> Workspace:
    from hutch.workspace import open_workspace

    return open_workspace(project=ns.project, flags=_flag_layer(ns), quiet=ns.quiet)


def _flag_layer(ns: Args) -> Layer:
    from hutch.config.load import Layer
    from hutch.config.schema import SCHEMA, ConfigValue

    values: dict[str, ConfigValue] = {}
    for option in _options_of(ns.command):
        value = getattr(ns, option.flags[-1].lstrip("-").replace("-", "_"), None)
        if option.config is not None and value not in (None, []):
            where = option.flags[-1]
            values[option.config] = SCHEMA[option.config].validate(value, where)
    return Layer("flag", values)


def _options_of(command: str) -> list[Option]:
    return [*GLOBAL_OPTIONS, *(o for _, group in COMMANDS[command].options for o in group)]


def _run(ns: Args) -> int:
    from hutch.commands.run import RunRequest, execute

    request = RunRequest(agent=ns.agent, command=(), user_args=ns.tail, interactive=None, tty=None,
                         dry_run=ns.dry_run, force=ns.force, no_mask=ns.no_mask)  # fmt: skip
    return execute(workspace(ns), request)


def _exec(ns: Args) -> int:
    from hutch.commands.run import RunRequest, execute

    cmd = tuple(ns.cmd) + ns.tail
    if not cmd:
        raise UsageError("exec needs a command", "hutch exec -- CMD [ARGS]")
    request = RunRequest(agent=ns.agent, command=cmd, user_args=(), interactive=ns.interactive,
                         tty=ns.tty, dry_run=ns.dry_run, force=ns.force,
                         no_mask=ns.no_mask)  # fmt: skip
    return execute(workspace(ns), request)


def _shell(ns: Args) -> int:
    from hutch.commands.run import RunRequest, execute

    request = RunRequest(agent=ns.agent, command=("bash", "-l"), user_args=(), interactive=True,
                         tty=None, dry_run=ns.dry_run, force=ns.force,
                         no_mask=ns.no_mask)  # fmt: skip
    return execute(workspace(ns), request)


def _build(ns: Args) -> int:
    # The stamp answers an unchanged `hutch build` before any config is read.
    from hutch import stamp

    stamp_file = stamp.stamp_path(ns.argv, os.getcwd())
    if not ns.no_cache and (answer := stamp.check(stamp_file)) is not None:
        message, tag = answer
        if message:
            print(f"hutch: {message}", file=sys.stderr)
        print(tag)
        return 0
    from hutch.commands import images

    return images.build(workspace(ns), ns.agent, no_cache=ns.no_cache, stamp_file=stamp_file,
                        project_from_flag=ns.project is not None)  # fmt: skip


def _update(ns: Args) -> int:
    from hutch.commands import images

    return images.update(workspace(ns), ns.agent, every=ns.all)


def _agents(ns: Args) -> int:
    from hutch.commands import images

    return images.agents(workspace(ns))


def _doctor(ns: Args) -> int:
    from hutch.commands.doctor import doctor

    return doctor(lambda: workspace(ns))


def _ps(ns: Args) -> int:
    from hutch.commands import sessions

    return sessions.ps(workspace(ns))


def _stop(ns: Args) -> int:
    from hutch.commands import sessions

    assert ns.session is not None  # a required positional of stop
    return sessions.stop(workspace(ns), ns.session)


def _gc(ns: Args) -> int:
    from hutch.commands import sessions

    return sessions.gc(workspace(ns))


def _audit(ns: Args) -> int:
    from hutch.commands import sessions

    return sessions.audit(workspace(ns), ns.session, as_json=ns.json)


def _accept(ns: Args) -> int:
    from hutch.commands import review

    assert ns.session is not None  # a required positional of accept
    return review.accept(workspace(ns), ns.session, list(ns.paths or ()))


def _config(ns: Args) -> int:
    from hutch.commands import config

    if ns.action == "show":
        return config.config_show(workspace(ns))
    if ns.action == "trust":
        return config.config_trust(workspace(ns))
    return config.config_init(ns.project, quiet=ns.quiet, force=ns.force)


COMMANDS: dict[str, Command] = {
    "run": Command("run the agent in the sandbox for this project (the default)", _run,
                   (("sandbox options", SANDBOX_OPTIONS),), (AGENT,), takes_tail=True),
    "exec": Command("run any command in exactly the sandbox the agent would get", _exec,
                    (("sandbox options", SANDBOX_OPTIONS),
                     (None, (Option(("--agent",), "str", "whose sandbox (default: config `agent`)"),
                             Option(("-i", "--interactive"), "flag", "keep stdin attached"),
                             Option(("-t", "--tty"), "flag", "allocate a terminal")))),
                    (Positional("cmd", "*", "the command (after --)"),), takes_tail=True),
    "shell": Command("an interactive shell in the sandbox", _shell,
                     (("sandbox options", SANDBOX_OPTIONS),), (AGENT,), takes_tail=True),
    "build": Command("build the image if its recipe changed", _build,
                     ((None, (Option(("--no-cache",), "flag", "rebuild every layer"),)),), (AGENT,)),
    "update": Command("rebuild with the agent's newest release", _update,
                      ((None, (Option(("--all",), "flag", "every agent with an image"),)),), (AGENT,)),
    "agents": Command("built-in and configured agents, image state", _agents),
    "doctor": Command("check the engine and setup, print fixes", _doctor),
    "ps": Command("running sessions", _ps),
    "stop": Command("stop a session", _stop, (), (Positional("session", "1", "session id"),)),
    "gc": Command("remove anything hutch left behind", _gc),
    "audit": Command("what a session was denied or had masked", _audit,
                     ((None, (Option(("--json",), "flag", "one JSON object per line"),)),),
                     (Positional("session", "?", "session id (default: the latest)"),)),
    "accept": Command("let host-executed files a session wrote into the project", _accept, (),
                      (Positional("session", "1", "session id"),
                       Positional("paths", "*", "only these paths (default: all it holds)"))),
    "config": Command("show the effective config, or write a template", _config,
                      ((None, (Option(("--force",), "flag", "config init: replace hutch.toml"),)),),
                      (Positional("action", "1", "trust: let this project's hutch.toml widen the "
                                  "sandbox", ("show", "init", "trust")),)),
}  # fmt: skip


# -- parsing ----------------------------------------------------------------------------


def _default(kind: str | tuple[str, ...]) -> object:
    return False if kind == "flag" else [] if kind == "list" else None


def _add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: Sequence[Option],
    *,
    suppress: bool = False,
) -> None:
    types: dict[str, type] = {"int": int, "float": float, "str": str}
    for option in options:
        default = argparse.SUPPRESS if suppress else _default(option.kind)
        if option.kind == "flag":
            parser.add_argument(*option.flags, action="store_true", default=default, help=option.help)
        elif option.kind == "list":
            parser.add_argument(*option.flags, action="append", default=default,
                                metavar=option.metavar, help=option.help)  # fmt: skip
        elif isinstance(option.kind, tuple) or option.kind == "engine":
            choices = engine_choices() if option.kind == "engine" else option.kind
            parser.add_argument(*option.flags, choices=choices, default=default, help=option.help)
        else:
            parser.add_argument(*option.flags, type=types[option.kind], default=default,
                                metavar=option.metavar, help=option.help)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse exits 2 already; say what to do next as every error does.
        self.print_usage(sys.stderr)
        print(f"hutch: {message}\n  hint: see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """argparse over the command table."""
    parser = _Parser(prog="hutch", description="Run AI coding agents in a locked container.")
    parser.add_argument("--version", action="version", version=f"hutch {__version__}")
    _add_options(parser, GLOBAL_OPTIONS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        for pos in command.positionals:
            p.add_argument(pos.name, nargs=None if pos.nargs == "1" else pos.nargs,
                           choices=pos.choices, help=pos.help)  # fmt: skip
        for title, options in command.options:
            _add_options(p if title is None else p.add_argument_group(title), options)
        # Global options may also follow the command word.
        _add_options(p, GLOBAL_OPTIONS, suppress=True)
    return parser


def _command_index(args: Sequence[str]) -> int | None:
    """Where the command word is (or would go); None for --help/--version alone."""
    index = 0
    takes_value = {flag for o in GLOBAL_OPTIONS if o.kind != "flag" for flag in o.flags}
    switches = {flag for o in GLOBAL_OPTIONS if o.kind == "flag" for flag in o.flags}
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


def parse(argv: Sequence[str]) -> Args:
    """The command line read (argparse exits 2 on a usage error)."""
    args, tail = split_argv(argv)
    ns = build_parser().parse_args(args, namespace=Args())
    ns.argv, ns.tail = args, tail
    return ns


# -- running ----------------------------------------------------------------------------


def entry() -> NoReturn:
    """The `hutch` console script."""
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    try:
        command = COMMANDS[ns.command]
        if ns.tail and not command.takes_tail:
            raise UsageError(f"`hutch {ns.command}` takes no arguments after --")
        return command.run(ns)
    except HutchError as err:
        print(f"hutch: {err}", file=sys.stderr)
        if ns.debug:
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
