"""Agent release lookups and the pinned versions hutch builds with.

A build installs an exact version, so a cached layer can never keep an agent
stale without saying so: `hutch update` looks up the newest release and moves
the pin, which changes the recipe hash and reruns only the agent layer.
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

from hutch.agents import AgentDef, registry_name
from hutch.config.schema import matches
from hutch.paths import read_text, replace_text

NPM_REGISTRY = "https://registry.npmjs.org"
PYPI_INDEX = "https://pypi.org/pypi"
# A version goes into a RUN line and an image label: nothing but plain characters.
_VERSION = r"^[A-Za-z0-9][A-Za-z0-9.+_\-]*$"


class LookupFailed(Exception):
    """The registry could not be asked or did not answer sensibly."""


class Pin(NamedTuple):
    version: str
    # When the registry last said that `version` is the newest release.
    checked: float
    # The newest release a later lookup saw, when it differs from `version`.
    newest: str | None = None
    # When the registry was last asked about this agent (answered or not).
    looked: float = 0.0


def _npm_registry() -> str:
    # npm's own setting names a mirror when the user has one.
    configured = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY")
    return (configured or NPM_REGISTRY).rstrip("/")


def release_url(agent: AgentDef) -> str:
    """Where the registry answers with the newest release of the agent's package."""
    from urllib.parse import quote

    name = registry_name(agent)
    if agent.install == "pip":
        return f"{PYPI_INDEX}/{quote(name, safe='')}/json"
    # Scoped names keep their @ and escape the slash: /@scope%2fname/latest.
    return f"{_npm_registry()}/{quote(name, safe='@')}/latest"


def parse_release(install: str, data: object) -> str | None:
    """The version in a registry answer (npm's /latest or PyPI's JSON), if usable."""
    if not isinstance(data, dict):
        return None
    if install == "pip":
        info = data.get("info")
        version = info.get("version") if isinstance(info, dict) else None
    else:
        version = data.get("version")
    if not isinstance(version, str) or not matches(_VERSION, version):
        return None
    return version


def latest_version(agent: AgentDef, timeout: float = 15.0) -> str:
    # Loaded only when a lookup is due: `hutch run` start-up stays lean.
    import http.client
    import json
    import urllib.request

    url = release_url(agent)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.load(response)
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise LookupFailed(f"{url}: {err}") from err
    version = parse_release(agent.install, data)
    if version is None:
        raise LookupFailed(f"{url}: no usable version in the answer")
    return version


class Pins:
    """Pinned agent versions, kept under the state directory.

    Several hutch processes may write at once (a session's background check
    while `hutch update` runs): each write replaces the file whole, so a reader
    sees one version or the other, never a torn file.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(read_text(self.path))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, agent: str) -> Pin | None:
        entry = self._load().get(agent)
        if not isinstance(entry, dict):
            return None
        version, checked = entry.get("version"), entry.get("checked", 0)
        newest, looked = entry.get("newest"), entry.get("looked", 0)
        if not isinstance(version, str) or not isinstance(checked, int | float):
            return None
        return Pin(
            version,
            float(checked),
            newest if isinstance(newest, str) and newest != version else None,
            float(looked) if isinstance(looked, int | float) else 0.0,
        )

    def names(self) -> list[str]:
        return [name for name in self._load() if self.get(name) is not None]

    def set(self, agent: str, version: str, now: float | None = None) -> None:
        """Pin `version`, which the registry has just named the newest release."""
        stamp = time.time() if now is None else now
        self._write(agent, Pin(version, stamp, None, stamp))

    def looking(self, agent: str, now: float) -> None:
        """Note that the registry is being asked, so that nobody asks again too soon."""
        pin = self.get(agent)
        if pin is not None:
            self._write(agent, pin._replace(looked=now))

    def seen(self, agent: str, newest: str, now: float) -> None:
        """Record the registry's answer without moving the pin."""
        pin = self.get(agent)
        if pin is None:
            return
        if newest == pin.version:
            self._write(agent, Pin(pin.version, now, None, now))
        else:
            self._write(agent, pin._replace(newest=newest, looked=now))

    def _write(self, agent: str, pin: Pin) -> None:
        data = self._load()
        entry: dict[str, object] = {"version": pin.version, "checked": pin.checked}
        if pin.newest is not None:
            entry["newest"] = pin.newest
        if pin.looked:
            entry["looked"] = pin.looked
        data[agent] = entry
        # The background check writes from a thread: replace_text's temporary
        # name is unique per process and thread.
        import json

        replace_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
