"""Agent release lookups and the pinned versions hutch builds with.

A build installs an exact version, so a cached layer can never keep an agent
stale without saying so: `hutch update` looks up the newest release and moves
the pin, which changes the recipe hash and reruns only the agent layer.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

from hutch.agents import AgentDef

NPM_REGISTRY = "https://registry.npmjs.org"
PYPI_INDEX = "https://pypi.org/pypi"


class LookupFailed(Exception):
    """The registry could not be asked or did not answer sensibly."""


class Pin(NamedTuple):
    version: str
    checked: float


def _npm_registry() -> str:
    # npm's own setting names a mirror when the user has one.
    return (os.environ.get("npm_config_registry") or NPM_REGISTRY).rstrip("/")


def latest_version(agent: AgentDef, timeout: float = 15.0) -> str:
    # Loaded only when a lookup is due: `hutch run` start-up stays lean.
    import urllib.parse
    import urllib.request

    if agent.install == "pip":
        url = f"{PYPI_INDEX}/{urllib.parse.quote(agent.package)}/json"
    else:
        url = f"{_npm_registry()}/{agent.package.replace('/', '%2f')}/latest"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.load(response)
    except (OSError, ValueError) as err:
        raise LookupFailed(f"{url}: {err}") from err
    version = data.get("info", {}).get("version") if agent.install == "pip" else data.get("version")
    if not isinstance(version, str) or not version or any(c in version for c in " '\"\n"):
        raise LookupFailed(f"{url}: no usable version in the answer")
    return version


class Pins:
    """Pinned agent versions, kept under the state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, agent: str) -> Pin | None:
        entry = self._load().get(agent)
        if not isinstance(entry, dict):
            return None
        version, checked = entry.get("version"), entry.get("checked", 0)
        if not isinstance(version, str) or not isinstance(checked, int | float):
            return None
        return Pin(version, float(checked))

    def set(self, agent: str, version: str) -> None:
        data = self._load()
        data[agent] = {"version": version, "checked": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)
