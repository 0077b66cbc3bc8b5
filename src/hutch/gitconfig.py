"""Read one value from a git config file without running git.

A small reader, not git's: it ignores `include` and `includeIf`, and values
continued over several lines. Section and key match case-insensitively. It
opens only regular files, so a FIFO planted where a config belongs cannot
hang hutch.
"""

from __future__ import annotations

from hutch import paths


def read_regular(path: str, limit: int) -> str | None:
    """Up to ``limit`` bytes of a regular file, decoded; None for anything else."""
    try:
        return paths.read_regular(path, limit, follow=False).decode("utf-8", errors="surrogateescape")
    except OSError:
        return None


def value(path: str, section: str, key: str) -> str | None:
    """The last value of ``section.key`` in one git config file."""
    text = read_regular(path, limit=1 << 20)
    if text is None:
        return None
    current: str | None = None
    found: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            header, _, rest = line[1:].partition("]")
            current = header.strip().lower()
            line = rest.strip()
            if not line:
                continue
        if not line or line[0] in "#;":
            continue
        name, eq, val = line.partition("=")
        if current == section and name.strip().lower() == key:
            found = _unquote(val) if eq else "true"
    return found


def _unquote(raw: str) -> str:
    out: list[str] = []
    quoted = False
    escapes = {"n": "\n", "t": "\t", "b": "\b", '"': '"', "\\": "\\"}
    chars = iter(raw.strip())
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            out.append(escapes.get(nxt, nxt))
        elif ch == '"':
            quoted = not quoted
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
    return "".join(out).strip()
