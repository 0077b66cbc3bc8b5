"""What the run path imports before the sandbox starts.

A guard against creep, not a budget: the modules below serve other commands
(registry lookups, `hutch agents`), the session once it runs (the egress
proxy), or a config file that does not exist here. Importing one of them
before every launch is a change worth noticing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

NOT_BEFORE_LAUNCH = (
    "asyncio",  # the egress proxy, started while the engine creates the container
    "ssl",  # registry lookups and the proxy's TLS checks
    "http.client",
    "urllib.request",
    "email",
    "concurrent.futures",  # `hutch agents`
    "subprocess",  # engine calls; the sandbox itself is spawned by hutch.process
    "tomllib",  # only when a config file exists
    "difflib",  # only to suggest a key in a config error
    "hutch.commands.images",  # the other commands
    "hutch.commands.sessions",
    "hutch.commands.config",
    "hutch.commands.doctor",
)

DRIVER = """\
import json, sys
from hutch.cli import main
status = main(sys.argv[1:])
print(json.dumps([status, sorted(sys.modules)]), file=sys.stderr)
"""


def _modules_after(tmp_path: Path, *args: str) -> set[str]:
    home, project = tmp_path / "home", tmp_path / "proj"
    project.mkdir()
    state = home / ".local" / "state" / "hutch"
    state.mkdir(parents=True)
    # A pinned agent version: no registry lookup to plan the image.
    pins = {"claude": {"version": "1.0.0", "checked": time.time()}}
    (state / "versions.json").write_text(json.dumps(pins))
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    status, modules = json.loads(done.stderr.strip().splitlines()[-1])
    assert status == 0, done.stderr
    assert done.stdout.startswith("docker run "), done.stdout
    return set(modules)


def test_exec_imports_nothing_it_does_not_need_before_launch(tmp_path: Path) -> None:
    modules = _modules_after(tmp_path, "--engine", "docker", "exec", "--dry-run", "--", "true")
    # The control: the path did plan a sandbox with the egress policy.
    assert {"hutch.commands.run", "hutch.plan", "hutch.egress.policy"} <= modules
    assert sorted(modules & set(NOT_BEFORE_LAUNCH)) == []
