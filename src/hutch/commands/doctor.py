"""doctor: check the engine and the setup, and print a fix for each problem.

The engine's own checks live with the engine (Engine.doctor_checks); the
ones here hold for every engine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hutch import images
from hutch.engines.base import Check
from hutch.errors import EXIT_ENGINE, ConfigError, HutchError

if TYPE_CHECKING:
    from collections.abc import Callable

    from hutch.workspace import Workspace


class _Report:
    """doctor's output: one line per check, and the fix under each one that needs it."""

    def __init__(self) -> None:
        self.problems = 0

    def show(self, check: Check) -> None:
        if check.state == "note":
            print(f"       {check.what}")
            return
        print(f"[{'FAIL' if check.state == 'fail' else check.state}] {check.what}")
        if check.state == "fail":
            self.problems += 1
        if check.state in ("fail", "warn"):
            print(f"       fix: {check.fix}")


def doctor(make_workspace: Callable[[], Workspace]) -> int:
    report = _Report()
    try:
        ws = make_workspace()
    except ConfigError as err:
        report.show(Check("fail", f"config: {err.message}", err.hint or "fix the config file"))
        return err.exit_code
    except HutchError as err:
        report.show(Check("fail", err.message, err.hint or ""))
        return err.exit_code
    engine = ws.engine
    report.show(Check("ok", f"engine: {engine.name} ({engine.binary})"))
    report.show(Check("note", f"why: {_engine_reason(ws)}"))
    engine_checks = engine.doctor_checks()
    for check in engine_checks:
        report.show(check)
    if any(check.fatal for check in engine_checks):
        return EXIT_ENGINE
    for check in _setup_checks(ws):
        report.show(check)
    return 0 if report.problems == 0 else 1


def _setup_checks(ws: Workspace) -> list[Check]:
    engine = ws.engine
    base = ws.settings.base
    checks = [Check(
        "ok" if engine.image_id(base) is not None else "fail",
        f"base image {base} present",
        f"{engine.binary} pull {base} (or load it offline: {engine.binary} import)",
    )]  # fmt: skip
    if ws.settings.ca_certificates == "host":
        try:
            certs = images.ca_files(ws)
        except ConfigError as err:
            checks.append(Check("fail", err.message, err.hint or ""))
        else:
            names = ", ".join(n for n, _ in certs) or "none"
            checks.append(Check("ok", f"host CA certificates trusted in the image: {names}"))
    from hutch.private import is_private_dir

    for label, path in (("data", ws.dirs.data), ("state", ws.dirs.state)):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            writable = os.access(path, os.W_OK)
        except OSError:
            writable = False
        checks.append(Check("ok" if writable else "fail", f"{label} directory {path} writable",
                            f"fix permissions on {path}"))  # fmt: skip
        if writable and not is_private_dir(path):
            checks.append(Check("fail", f"{label} directory {path} is not yours alone (mode 0700)",
                                f"chmod 700 {path}"))  # fmt: skip
    from hutch import homes

    checks.append(Check("ok", f"this project's agent homes: {homes.project_dir(ws.dirs, ws.project)}"))
    gone = homes.vanished(ws.dirs)
    if gone:
        listed = ", ".join(g.project for g in gone[:3]) + (" and more" if len(gone) > 3 else "")
        checks.append(Check("warn", f"agent homes of {len(gone)} project(s) no longer there: {listed}",
                            "`hutch gc` removes them"))  # fmt: skip
    return checks


def _engine_reason(ws: Workspace) -> str:
    setting = ws.settings.engine
    if setting != "auto":
        return f'engine = "{setting}" from {ws.settings.merged.origins.get("engine", "config")}'
    from hutch.engines import select

    return select("auto").why
