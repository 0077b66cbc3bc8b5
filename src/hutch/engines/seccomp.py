"""hutch's seccomp profile: the engines' default, narrowed.

Built on the default profile that containers-common ships for Podman (and
CRI-O): `/etc/containers/seccomp.json` when the administrator has one, else
`/usr/share/containers/seccomp.json`. Docker compiles its own default in and
publishes no file, so on a Docker-only host without containers-common hutch
keeps Docker's default (`hutch doctor` says how to get the narrower one).

What hutch takes away: setting a setuid or setgid bit, by chmod or at
creation (open, creat, mknod with such a mode). A file the sandbox made setuid
would run with the user's identity for any other local user who can reach the
project. openat2 answers "not implemented", as an older kernel would: its mode
sits in a structure that seccomp cannot look into, and C libraries do not use
it for open().
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TypedDict

SOURCES = ("/etc/containers/seccomp.json", "/usr/share/containers/seccomp.json")
SETID = 0o6000
EPERM = 1
ENOSYS = 38

# Syscall -> index of its mode argument.
MODE_ARG: dict[str, int] = {
    "chmod": 1,
    "fchmod": 1,
    "fchmodat": 2,
    "fchmodat2": 2,
    "creat": 1,
    "open": 2,
    "openat": 3,
    "mknod": 1,
    "mknodat": 2,
}


class Arg(TypedDict):
    index: int
    value: int
    valueTwo: int
    op: str


class Rule(TypedDict, total=False):
    names: list[str]
    action: str
    args: list[Arg]
    errnoRet: int
    comment: str


def source() -> str | None:
    for path in SOURCES:
        if os.path.isfile(path):
            return path
    return None


def narrowed(profile: dict[str, object]) -> dict[str, object]:
    """The profile with hutch's rules: every mention of the mode-taking calls
    and openat2 removed from its rules, then hutch's own rules for them."""
    rules = profile.get("syscalls")
    if not isinstance(rules, list):
        raise ValueError("the seccomp profile has no syscalls list")
    taken = set(MODE_ARG) | {"openat2"}
    kept: list[object] = []
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("names"), list):
            raise ValueError("the seccomp profile has a rule without names")
        names = [n for n in rule["names"] if n not in taken]
        if names:
            kept.append({**rule, "names": names})
    for name, index in MODE_ARG.items():
        kept.append(
            Rule(
                names=[name],
                action="SCMP_ACT_ALLOW",
                args=[Arg(index=index, value=SETID, valueTwo=0, op="SCMP_CMP_MASKED_EQ")],
            )
        )
        for bit in (0o4000, 0o2000):
            kept.append(
                Rule(
                    names=[name],
                    action="SCMP_ACT_ERRNO",
                    errnoRet=EPERM,
                    args=[Arg(index=index, value=bit, valueTwo=bit, op="SCMP_CMP_MASKED_EQ")],
                    comment="hutch: no setuid or setgid bits",
                )
            )
    kept.append(
        Rule(
            names=["openat2"],
            action="SCMP_ACT_ERRNO",
            errnoRet=ENOSYS,
            comment="hutch: openat2's mode cannot be checked",
        )
    )
    return {**profile, "syscalls": kept}


def profile_file(state: str) -> str | None:
    """The narrowed profile written under hutch's state dir (once per source
    content); None when no source profile exists here."""
    path = source()
    if path is None:
        return None
    with open(path, "rb") as handle:
        raw = handle.read()
    digest = hashlib.sha256(raw + json.dumps(MODE_ARG).encode()).hexdigest()[:16]
    target = os.path.join(state, "seccomp", f"{digest}.json")
    if os.path.exists(target):
        return target
    profile = json.loads(raw)
    if not isinstance(profile, dict):
        raise ValueError(f"{path} is not a seccomp profile")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(narrowed(profile), handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return target


def doctor_check() -> tuple[str, str, str]:
    """(state, what, fix) for `hutch doctor`."""
    path = source()
    if path is not None:
        return ("ok", f"seccomp: hutch narrows {path} (no setuid/setgid bits inside)", "")
    return (
        "warn",
        "seccomp: no containers-common profile to build on; the engine's default applies, and setuid "
        "bits set inside are removed after each session instead of refused",
        "install it: sudo apt-get install golang-github-containers-common (Fedora: containers-common)",
    )
