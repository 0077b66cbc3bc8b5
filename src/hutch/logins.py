"""The login state that every project's agent home shares, and nothing else.

Each agent names the files, or parts of files, of its home that hold its login
(AgentDef.login). One store per agent keeps just those parts, outside every
home and never mounted into a sandbox: `$XDG_DATA_HOME/hutch/logins/AGENT/`.
Before a session hutch copies the store into the project's home; after it,
it copies back what the session changed (a login, a refreshed token, a
logout). Moving the login out of the sandbox's reach later means changing
this module only: it is the one place that knows where the login lives.

A home is the sandbox's to write. Every read and write in one goes through
descriptors opened beneath the home without following links, so a link that
a session planted there never makes hutch read or write a file of the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hutch.agents import LoginFile

STORE = "logins"
MAX_BYTES = 32 << 20  # a bigger file is not a login: it is left alone
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def store_dir(data: str, agent: str) -> str:
    """Where an agent's shared login state lives."""
    return os.path.join(data, STORE, agent)


# -- files beneath a directory, no link followed ---------------------------------------


def _open_dir(root: str, parts: Sequence[str], *, create: bool) -> int:
    fd = os.open(root, _DIR)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            inner = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_beneath(root: str, rel: str) -> bytes | None:
    """The regular file root/rel, or None when there is none: missing, not a
    regular file, too big, or reached through a link."""
    *parts, name = rel.split("/")
    try:
        dir_fd = _open_dir(root, parts, create=False)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        data = handle.read(MAX_BYTES + 1)
    return data if len(data) <= MAX_BYTES else None


def write_beneath(root: str, rel: str, data: bytes) -> None:
    """Replace root/rel whole (0600), making the directories on the way (0700);
    a link in its place is replaced, never followed."""
    *parts, name = rel.split("/")
    dir_fd = _open_dir(root, parts, create=True)
    tmp = f".{name}.hutch-{os.getpid()}.tmp"
    try:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)  # fmt: skip
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(dir_fd)


def remove_beneath(root: str, rel: str) -> None:
    *parts, name = rel.split("/")
    try:
        dir_fd = _open_dir(root, parts, create=False)
    except OSError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


# -- the login part of a file -------------------------------------------------------


def _is_json(login: LoginFile) -> bool:
    return login.path.endswith(".json")


def login_part(login: LoginFile, data: bytes | None) -> bytes | None:
    """The login state in a home's file, in the store's form: the whole file,
    or a JSON object of the named (dotted) keys, or the KEY=value lines of the
    named variables. None when the file holds none."""
    if data is None or not login.keys:
        return data
    if _is_json(login):
        obj = json.loads(data)
        if not isinstance(obj, dict):
            return None
        part = {}
        for key in login.keys:
            outer, _, inner = key.partition(".")
            if not inner and outer in obj:
                part[key] = obj[outer]
            elif inner and isinstance(obj.get(outer), dict) and inner in obj[outer]:
                part[key] = obj[outer][inner]
        return json.dumps(part, sort_keys=True).encode() if part else None
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if _env_name(line) in login.keys]
    return "".join(f"{line}\n" for line in sorted(lines)).encode() if lines else None


def _env_name(line: str) -> str:
    name = line.strip().removeprefix("export ").partition("=")[0]
    return name.strip()


def with_part(login: LoginFile, data: bytes | None, part: bytes | None) -> bytes | None:
    """The home's file with its login state replaced by part (None: removed)."""
    if not login.keys:
        return part
    if _is_json(login):
        obj = json.loads(data) if data is not None else {}
        if not isinstance(obj, dict):
            obj = {}
        for key in login.keys:
            outer, _, inner = key.partition(".")
            if not inner:
                obj.pop(outer, None)
            elif isinstance(obj.get(outer), dict):
                obj[outer].pop(inner, None)
        for key, value in (json.loads(part) if part is not None else {}).items():
            outer, _, inner = key.partition(".")
            if not inner:
                obj[outer] = value
            else:
                if not isinstance(obj.get(outer), dict):
                    obj[outer] = {}
                obj[outer][inner] = value
        return (json.dumps(obj, indent=2) + "\n").encode()
    kept = [line for line in (data or b"").decode("utf-8", "replace").splitlines()
            if _env_name(line) not in login.keys]  # fmt: skip
    text = "".join(f"{line}\n" for line in kept) + (part or b"").decode("utf-8", "replace")
    return text.encode()


# -- copying between the store and a home ---------------------------------------------


def _digest(part: bytes | None) -> str | None:
    return hashlib.sha256(part).hexdigest() if part is not None else None


def _load_synced(record: str) -> dict[str, str | None]:
    try:
        with open(record, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else None for k, v in data.items()}


def _save_synced(record: str, synced: dict[str, str | None]) -> None:
    from hutch.paths import replace_text

    replace_text(record, json.dumps(synced, sort_keys=True) + "\n")


def pull(store: str, home: str, logins: Sequence[LoginFile], record: str) -> list[str]:
    """Before a session: give the home the shared login state. A change the
    home holds that never reached the store (its session was killed) goes to
    the store first, unless the store changed meanwhile. Returns what could
    not be done, one line each."""
    synced = _load_synced(record)
    before = dict(synced)
    problems: list[str] = []
    for login in logins:
        try:
            current = read_beneath(home, login.path)
            local = login_part(login, current)
            shared = read_beneath(store, login.path)
            last = synced.get(login.path)
            if local != shared and _digest(local) != last and _digest(shared) == last:
                _store(store, login, local)  # the home's news, left by a session that was killed
                shared = local
            if local != shared:
                _apply(home, login, current, shared)
            synced[login.path] = _digest(shared)
        except (OSError, ValueError, RecursionError) as err:
            problems.append(f"{login.path}: {err}")
    if synced != before:
        _save_synced(record, synced)
    return problems


def push(store: str, home: str, logins: Sequence[LoginFile], record: str) -> list[str]:
    """After a session: what it changed of the login state goes to the store."""
    synced = _load_synced(record)
    before = dict(synced)
    problems: list[str] = []
    for login in logins:
        try:
            local = login_part(login, read_beneath(home, login.path))
            if _digest(local) != synced.get(login.path):
                _store(store, login, local)
                synced[login.path] = _digest(local)
        except (OSError, ValueError, RecursionError) as err:
            problems.append(f"{login.path}: {err}")
    if synced != before:
        _save_synced(record, synced)
    return problems


def _store(store: str, login: LoginFile, part: bytes | None) -> None:
    if part is None:
        remove_beneath(store, login.path)
    else:
        os.makedirs(store, mode=0o700, exist_ok=True)
        write_beneath(store, login.path, part)


def _apply(home: str, login: LoginFile, current: bytes | None, part: bytes | None) -> None:
    updated = with_part(login, current, part)
    if updated is None:
        remove_beneath(home, login.path)
    else:
        write_beneath(home, login.path, updated)


def take_from(old_home: str, store: str, logins: Sequence[LoginFile]) -> bool:
    """Fill an empty store from a home (the shared home of older versions);
    True when it held a login."""
    found = False
    for login in logins:
        try:
            part = login_part(login, read_beneath(old_home, login.path))
        except (ValueError, RecursionError):
            continue
        if part is not None:
            _store(store, login, part)
            found = True
    return found


def logged_in(store: str, logins: Sequence[LoginFile]) -> bool:
    return any(read_beneath(store, login.path) is not None for login in logins)
