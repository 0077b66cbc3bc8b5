"""Render the image recipe (a Dockerfile plus its context) and its content-hash tag.

Pure: everything that shapes the image goes into the hash, so an unchanged
recipe is reused without a build and a changed one gets a new tag.
"""

from __future__ import annotations

import os
from hashlib import sha256
from typing import NamedTuple

from hutch.agents import AgentDef
from hutch.paths import read_bytes

RECIPE_FORMAT = "1"

# What every hutch image holds. Node.js and npm come from the base's own
# packages (no third-party setup script); python3-venv serves pip agents and
# extras; socat is the in-sandbox end of the egress relay; no sudo.
SYSTEM_PACKAGES = (
    "ca-certificates",
    "curl",
    "git",
    "less",
    "nodejs",
    "npm",
    "openssh-client",
    "procps",
    "python3",
    "python3-venv",
    "ripgrep",
    "socat",
)

CA_DIR = "/usr/local/share/ca-certificates/hutch"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PIP_PREFIX = "/opt/hutch/venv"
ENTRYPOINT = "/usr/local/bin/hutch-entrypoint"
HOME = "/home/hutch"


class ContextFile(NamedTuple):
    path: str
    content: bytes
    mode: int


class Recipe(NamedTuple):
    agent: str
    agent_version: str
    dockerfile: str
    files: tuple[ContextFile, ...]
    digest: str

    @property
    def tag(self) -> str:
        return f"hutch-{self.agent}:{self.digest[:16]}"


def entrypoint_script() -> bytes:
    return read_bytes(os.path.join(os.path.dirname(__file__), "entrypoint.sh"))


def _words(items: tuple[str, ...]) -> str:
    return " ".join(items)


def agent_install_line(agent: AgentDef, version: str) -> str:
    if agent.install == "pip":
        spec = agent.package if version == "latest" else f"{agent.package}=={version}"
        return (
            f"RUN {PIP_PREFIX}/bin/pip install --no-cache-dir '{spec}' "
            f"&& ln -sf {PIP_PREFIX}/bin/{agent.command} /usr/local/bin/{agent.command}"
        )
    node = ""
    if agent.node is not None:
        # This agent does not run on the base's Node.js: a newer one from the npm
        # registry's `node` package, in this agent's layer only. It lands in
        # /usr/local/bin, ahead of the base's /usr/bin/node on PATH.
        node = f" 'node@{agent.node}'"
    return (
        f"RUN npm install -g --cache /tmp/npm-cache --no-fund --no-audit "
        f"'{agent.package}@{version}'{node} && rm -rf /tmp/npm-cache"
    )


def render(
    agent: AgentDef,
    version: str,
    base: str,
    *,
    packages: tuple[str, ...] = (),
    npm: tuple[str, ...] = (),
    pip: tuple[str, ...] = (),
    ca_files: tuple[tuple[str, bytes], ...] = (),
) -> Recipe:
    """Build the recipe. ca_files are (file name, PEM bytes) pairs to trust."""
    files = [ContextFile("hutch-entrypoint", entrypoint_script(), 0o755)]
    lines = [
        f"FROM {base}",
        "ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8",
    ]
    ca_names: list[str] = []
    for index, (name, content) in enumerate(ca_files):
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.rsplit(".", 1)[0])
        file_name = f"{index:02d}-{stem}.crt"
        ca_names.append(file_name)
        files.append(ContextFile(f"ca/{file_name}", content, 0o644))
    if ca_names:
        # Before apt runs, so that an https mirror behind an intercepting proxy works
        # once ca-certificates is in; its postinst folds these into the bundle.
        lines.append(f"COPY ca/ {CA_DIR}/")
    system = tuple(dict.fromkeys(SYSTEM_PACKAGES + packages))
    lines.append(
        "RUN apt-get update"
        f" && apt-get install -y --no-install-recommends {_words(system)}"
        " && update-ca-certificates"
        " && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
        # No setuid or setgid helpers: nothing inside may regain privileges.
        " && find / -xdev -perm /6000 -type f -exec chmod ug-s {} + "
        f" && python3 -m venv {PIP_PREFIX}"
        f" && mkdir -p {HOME}"
    )
    lines.append(
        f"ENV NODE_EXTRA_CA_CERTS={CA_BUNDLE} SSL_CERT_FILE={CA_BUNDLE}"
        f" REQUESTS_CA_BUNDLE={CA_BUNDLE} PIP_CERT={CA_BUNDLE} CURL_CA_BUNDLE={CA_BUNDLE}"
        f" GIT_SSL_CAINFO={CA_BUNDLE} PIP_DISABLE_PIP_VERSION_CHECK=1"
        " NPM_CONFIG_UPDATE_NOTIFIER=false"
        f" PATH={PIP_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    if pip:
        lines.append(f"RUN {PIP_PREFIX}/bin/pip install --no-cache-dir {_quoted(pip)}")
    if npm:
        lines.append(
            "RUN npm install -g --cache /tmp/npm-cache --no-fund --no-audit "
            f"{_quoted(npm)} && rm -rf /tmp/npm-cache"
        )
    lines.append(f"COPY hutch-entrypoint {ENTRYPOINT}")
    # Last, so that an agent update reruns only this layer.
    lines.append(agent_install_line(agent, version))
    lines.append(f'ENTRYPOINT ["{ENTRYPOINT}"]')
    lines.append(
        "LABEL io.hutch.managed=true"
        f" io.hutch.agent={agent.name} io.hutch.agent-version={version}"
    )
    dockerfile = "\n".join(lines) + "\n"
    digest = _digest(dockerfile, files)
    return Recipe(agent.name, version, dockerfile, tuple(files), digest)


def _quoted(items: tuple[str, ...]) -> str:
    # Items are validated against strict patterns; quoting keeps `>=` out of the shell.
    return " ".join(f"'{item}'" for item in items)


def _digest(dockerfile: str, files: list[ContextFile]) -> str:
    h = sha256()
    h.update(f"hutch-recipe-{RECIPE_FORMAT}\0".encode())
    h.update(dockerfile.encode())
    for f in sorted(files, key=lambda item: item.path):
        h.update(f"\0{f.path}\0{f.mode:o}\0".encode())
        h.update(sha256(f.content).digest())
    return h.hexdigest()
