from __future__ import annotations

from hutch.agents import BUILTIN
from hutch.image.recipe import render

CLAUDE = BUILTIN["claude"]


def test_recipe_shape() -> None:
    r = render(CLAUDE, "2.1.0", "debian:bookworm-slim", ca_files=(("corp.crt", b"PEM"),))
    lines = r.dockerfile.splitlines()
    assert lines[0] == "FROM debian:bookworm-slim"
    assert "sudo" not in r.dockerfile
    assert "curl -fsSL" not in r.dockerfile and "| bash" not in r.dockerfile
    apt = next(i for i, line in enumerate(lines) if "apt-get install" in line)
    agent = next(i for i, line in enumerate(lines) if "@anthropic-ai/claude-code@2.1.0" in line)
    ca = lines.index("COPY ca/ /usr/local/share/ca-certificates/hutch/")
    # CAs before apt, the agent last: an agent update reruns only its own layer.
    assert ca < apt < agent
    assert agent == len(lines) - 3
    assert "nodejs npm" in lines[apt]
    assert "-perm /6000" in lines[apt]
    assert any(f.path == "ca/00-corp.crt" and f.content == b"PEM" for f in r.files)
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in r.dockerfile


def test_tag_is_content_hash() -> None:
    a = render(CLAUDE, "2.1.0", "debian:bookworm-slim")
    assert a.tag == render(CLAUDE, "2.1.0", "debian:bookworm-slim").tag
    assert a.tag.startswith("hutch-claude:")
    changed = [
        render(CLAUDE, "2.1.1", "debian:bookworm-slim"),
        render(CLAUDE, "2.1.0", "debian:trixie-slim"),
        render(CLAUDE, "2.1.0", "debian:bookworm-slim", packages=("jq",)),
        render(CLAUDE, "2.1.0", "debian:bookworm-slim", npm=("typescript",)),
        render(CLAUDE, "2.1.0", "debian:bookworm-slim", pip=("black",)),
        render(CLAUDE, "2.1.0", "debian:bookworm-slim", ca_files=(("a.crt", b"x"),)),
        render(CLAUDE._replace(package="@other/pkg"), "2.1.0", "debian:bookworm-slim"),
    ]
    tags = {r.tag for r in changed}
    assert a.tag not in tags and len(tags) == len(changed)


def test_no_ca_means_no_copy() -> None:
    r = render(CLAUDE, "1", "debian:bookworm-slim")
    assert "COPY ca/" not in r.dockerfile


def test_pip_agent_installs_into_venv() -> None:
    r = render(BUILTIN["aider"], "0.86.1", "debian:bookworm-slim")
    assert "/opt/hutch/venv/bin/pip install --no-cache-dir 'aider-chat==0.86.1'" in r.dockerfile
