"""Allowlist entries and per-connection decisions for the egress proxy.

Pure apart from the resolver, which is injected: a `Decision` names the exact
addresses that were checked, and the proxy connects to those and nothing else,
so a second DNS answer (rebinding) can never reach an address that was not
checked.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NetworkMode = Literal["allowlist", "open", "none"]
Resolver = Callable[[str, int], list[str]]
DenialKind = Literal[
    "mode-none", "not-listed", "ip-literal", "private", "invalid-host", "unresolved", "traffic"
]

MODES: tuple[NetworkMode, ...] = ("allowlist", "open", "none")
DEFAULT_PORT = 443
# Tunnels to these ports must start with a TLS ClientHello, so SNI can be checked.
TLS_ONLY_PORTS = frozenset({443})

# Named explicitly rather than via `ipaddress.is_private`: that property also
# covers the RFC 5737 documentation ranges, which must stay reachable because
# package registries on some networks resolve into 203.0.113.0/24.
_DENIED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), name)
    for net, name in (
        ("0.0.0.0/8", "'this network' (RFC 1122)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (RFC 6598)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (RFC 1112)"),
        ("255.255.255.255/32", "broadcast"),
    )
)
_DENIED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), name)
    for net, name in (
        ("::1/128", "loopback"),
        ("::/128", "unspecified"),
        ("fe80::/10", "link-local"),
        ("fc00::/7", "unique local (RFC 4193)"),
        ("ff00::/8", "multicast"),
    )
)

_PORT_RE = re.compile(r"[0-9]{1,5}")
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A label the resolver would read as a number: getaddrinfo hands any such name
# to inet_aton, which accepts decimal, octal and hex parts.
_NUMERIC_LABEL_RE = re.compile(r"0x[0-9a-f]*|[0-9]+")
_NUMERIC_HOST_RE = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")


class HostError(ValueError):
    """A host name that cannot be normalised; the proxy treats it as a denial."""


class Host(NamedTuple):
    """A normalised host: an ASCII name, or an IP address in canonical form."""

    name: str
    ip: IPAddress | None = None

    def display(self, port: int) -> str:
        if isinstance(self.ip, ipaddress.IPv6Address):
            return f"[{self.name}]:{port}"
        return f"{self.name}:{port}"


def normalise_host(text: str) -> Host:
    """Lower-case, strip one trailing dot, IDNA-encode; recognise IP literals in any spelling.

    Raises `HostError` for anything that is neither a plausible DNS name nor an
    IP address (userinfo, whitespace, empty labels, bad IDNA, ...).
    """
    if not text:
        raise HostError("empty host")
    if "@" in text:
        raise HostError("user info (user@) is not allowed in a host")
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise HostError(f"whitespace or control character in host {_show(text)}")
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise HostError(f"brackets are only for IPv6 addresses: {_show(text)}")
    if ":" in host:
        return _ip_host(_parse_ipv6(host, text))
    if host.endswith("."):
        host = host[:-1]
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise HostError(f"not a valid host name: {_show(text)} ({err})") from err
    labels = ascii_host.split(".")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        # No top-level domain is numeric, so this is an IPv4 literal in one of
        # the legacy spellings (127.1, 0x7f.1, 0177.0.0.1, 2130706433, ...).
        return _ip_host(_parse_ipv4_legacy(ascii_host, text))
    if len(ascii_host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise HostError(f"not a valid host name: {_show(text)}")
    return Host(ascii_host)


def _show(text: str) -> str:
    # Bounded: the message may end up in the audit log and in a 403 body.
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _ip_host(ip: IPAddress) -> Host:
    ip = canonical_ip(ip)
    return Host(str(ip), ip)


def canonical_ip(ip: IPAddress) -> IPAddress:
    """Map `::ffff:a.b.c.d` to `a.b.c.d`, so the IPv4 rules apply to it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_ipv6(host: str, text: str) -> IPAddress:
    if "%" in host:
        raise HostError(f"IPv6 zone identifiers are not allowed: {_show(text)}")
    try:
        return ipaddress.IPv6Address(host)
    except ValueError as err:
        raise HostError(f"not a valid IPv6 address: {_show(text)}") from err


def _parse_ipv4_legacy(host: str, text: str) -> IPAddress:
    if not _NUMERIC_HOST_RE.fullmatch(host):
        raise HostError(f"not a valid IP address: {_show(text)}")
    try:
        packed = socket.inet_aton(host)
    except OSError as err:
        raise HostError(f"not a valid IP address: {_show(text)}") from err
    return ipaddress.IPv4Address(packed)


def denied_range(ip: IPAddress) -> str | None:
    """The name of the denied range holding `ip`, or None when it is a public address."""
    ip = canonical_ip(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        for net4, name4 in _DENIED_V4:
            if ip in net4:
                return name4
        return None
    for net6, name6 in _DENIED_V6:
        if ip in net6:
            return name6
    return None


class AllowEntry(NamedTuple):
    """One `[network] allow` (or `allow_private`) entry, normalised."""

    text: str
    host: str
    port: int
    wildcard: bool = False
    ip: IPAddress | None = None
    private: bool = False

    def matches(self, host: Host, port: int) -> bool:
        if port != self.port:
            return False
        if self.ip is not None or host.ip is not None:
            return self.ip is not None and self.ip == host.ip
        if self.wildcard:
            return host.name.endswith("." + self.host)
        return host.name == self.host


def parse_allow_entry(text: str, *, private: bool = False) -> AllowEntry:
    """Parse `HOST[:PORT]`, `*.DOMAIN[:PORT]`, `IP[:PORT]` or `[IPv6][:PORT]`; port 443 if omitted.

    Raises `ValueError` naming the entry when it is not one of those forms.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid network allow entry {text!r}: {why}")

    if not text:
        raise bad("it is empty")
    if any(ch.isspace() for ch in text):
        raise bad("it contains whitespace")
    if "://" in text:
        raise bad("remove the scheme; an entry is HOST[:PORT], e.g. 'example.com:443'")
    if "/" in text or "?" in text or "#" in text:
        raise bad("remove the path; an entry is HOST[:PORT]")
    if "@" in text:
        raise bad("user info is not allowed; an entry is HOST[:PORT]")
    host_text, port_text = _split_host_port(text, bad)
    port = DEFAULT_PORT
    if port_text is not None:
        if not _PORT_RE.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise bad(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    wildcard = host_text.startswith("*.")
    if wildcard:
        host_text = host_text[2:]
    if host_text == "*" or (not host_text and wildcard):
        raise bad("a bare '*' is not allowed; use network mode 'open' to allow everything")
    if "*" in host_text:
        raise bad("'*' is only allowed as a leading '*.' label, e.g. '*.example.com'")
    try:
        host = normalise_host(host_text)
    except HostError as err:
        raise bad(str(err)) from err
    if wildcard and host.ip is not None:
        raise bad("a wildcard cannot apply to an IP address")
    return AllowEntry(text, host.name, port, wildcard, host.ip, private)


def _split_host_port(text: str, bad: Callable[[str], ValueError]) -> tuple[str, str | None]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad("missing ']' after an IPv6 address")
        rest = text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise bad("unexpected text after ']'")
        return text[: close + 1], (rest[1:] if rest else None)
    if text.count(":") > 1:
        # A bare IPv6 address; its port needs brackets, as in URLs.
        return text, None
    host, sep, port = text.partition(":")
    if not host:
        raise bad("the host is empty")
    return host, (port if sep else None)


class Decision(NamedTuple):
    """The verdict on one connection; `addresses` are the only ones the proxy may connect to."""

    allowed: bool
    reason: str
    rule: str | None
    host: str
    port: int
    addresses: tuple[str, ...] = ()
    kind: DenialKind | None = None
    is_ip: bool = False
    is_ipv6: bool = False

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """IPv4 addresses for `host` from the system resolver; IPv6 egress is not offered."""
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Policy:
    """Which hosts and ports the sandbox may reach, and at which addresses."""

    def __init__(
        self,
        mode: NetworkMode,
        entries: Sequence[AllowEntry] = (),
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown network mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode: NetworkMode = mode
        self.entries: tuple[AllowEntry, ...] = tuple(entries)
        self._resolver = resolver

    @classmethod
    def from_config(
        cls,
        mode: NetworkMode,
        allow: Sequence[str] = (),
        allow_private: Sequence[str] = (),
        *,
        resolver: Resolver = system_resolver,
    ) -> Policy:
        """Build from `[network]` values; raises `ValueError` naming the first bad entry."""
        entries = [parse_allow_entry(text) for text in allow]
        entries += [parse_allow_entry(text, private=True) for text in allow_private]
        return cls(mode, entries, resolver=resolver)

    def decide(self, host: str, port: int) -> Decision:
        """Decide on a connection to `host:port`; may call the resolver (blocking)."""
        if not 1 <= port <= 65535:
            return Decision(False, f"port {port} is out of range", None, host, port, (), "invalid-host")
        try:
            norm = normalise_host(host)
        except HostError as err:
            shown = host.rpartition("@")[2][:255]  # never keep user info: it may hold a password
            return Decision(False, str(err), None, shown, port, (), "invalid-host")
        is_v6 = isinstance(norm.ip, ipaddress.IPv6Address)
        base = Decision(False, "", None, norm.name, port, (), None, norm.ip is not None, is_v6)
        if self.mode == "none":
            return _deny(base, "network mode is 'none'", "mode-none")
        entry = self._match(norm, port)
        if norm.ip is not None:
            return self._decide_ip(base, norm.ip, entry)
        if entry is None and self.mode == "allowlist":
            return _deny(base, "not on the allowlist", "not-listed")
        try:
            raw = self._resolver(norm.name, port)
        except (OSError, UnicodeError) as err:
            return _deny(base, f"could not resolve {norm.name} ({err})", "unresolved", entry)
        addresses: list[str] = []
        for text in raw:
            try:
                ip = canonical_ip(ipaddress.ip_address(text))
            except ValueError:
                return _deny(base, f"resolver returned a non-address {text!r}", "unresolved", entry)
            range_name = denied_range(ip)
            if range_name is not None and not (entry is not None and entry.private):
                reason = f"{norm.name} resolves to {ip}, a {range_name} address"
                return _deny(base, reason, "private", entry)
            addresses.append(str(ip))
        if not addresses:
            return _deny(base, f"could not resolve {norm.name} (no IPv4 address)", "unresolved", entry)
        if entry is None:
            return _allow(base, "network mode is 'open'", None, addresses)
        return _allow(base, "allowed by rule", entry.text, addresses)

    def _decide_ip(self, base: Decision, ip: IPAddress, entry: AllowEntry | None) -> Decision:
        if entry is not None:
            return _allow(base, "IP literal listed explicitly", entry.text, [str(ip)])
        range_name = denied_range(ip)
        if self.mode == "open" and isinstance(ip, ipaddress.IPv4Address) and range_name is None:
            return _allow(base, "network mode is 'open'", None, [str(ip)])
        what = f"a {range_name} address" if range_name else "an IP literal"
        return _deny(base, f"{ip} is {what}; IP literals must be listed explicitly", "ip-literal")

    def _match(self, host: Host, port: int) -> AllowEntry | None:
        best: AllowEntry | None = None
        for entry in self.entries:
            if entry.matches(host, port) and (
                best is None or (entry.private, not entry.wildcard) > (best.private, not best.wildcard)
            ):
                best = entry
        return best


def _deny(base: Decision, reason: str, kind: DenialKind, entry: AllowEntry | None = None) -> Decision:
    rule = entry.text if entry is not None else None
    return Decision(False, reason, rule, base.host, base.port, (), kind, base.is_ip, base.is_ipv6)


def _allow(base: Decision, reason: str, rule: str | None, addresses: list[str]) -> Decision:
    return Decision(
        True, reason, rule, base.host, base.port, tuple(addresses), None, base.is_ip, base.is_ipv6
    )


def sni_denial(decision: Decision, server_name: str | None) -> str | None:
    """Why a ClientHello naming `server_name` may not pass the tunnel `decision` allowed.

    The name a TLS client asks for must be the host that was checked; only a
    tunnel to an allowed IP literal may omit it (clients send no SNI for IPs).
    """
    if server_name is None:
        if decision.is_ip:
            return None
        return f"SNI missing: the TLS ClientHello names no server (expected {decision.host!r})"
    try:
        name = normalise_host(server_name).name
    except HostError:
        name = server_name[:255]
    if name != decision.host:
        return f"SNI mismatch: TLS server name {name!r} is not the CONNECT host {decision.host!r}"
    return None


def plaintext_denial(decision: Decision) -> str | None:
    """Why a tunnel whose client speaks first in something other than TLS may not pass."""
    if decision.port in TLS_ONLY_PORTS:
        return f"non-TLS traffic on port {decision.port}, which must carry TLS"
    return None


def denial_message(method: str, decision: Decision) -> str:
    """The text a denied client reads: what was denied, why, and the line that would allow it."""
    target = decision.target
    entry = decision.host if decision.port == DEFAULT_PORT and not decision.is_ipv6 else target
    flag = f"run with --allow {target}"
    lines = [f"hutch denied {method} {target}: {decision.reason}."]
    if decision.kind == "not-listed":
        lines.append(f'To allow it, add "{entry}" to [network] allow in hutch.toml, or {flag}.')
    elif decision.kind == "ip-literal":
        lines.append(
            f'To allow this exact address, add "{target}" to [network] allow in hutch.toml, or {flag}.'
        )
    elif decision.kind == "private":
        lines.append(
            f"If {decision.host} is meant to reach a private address, "
            f'add "{entry}" to [network] allow_private in hutch.toml.'
        )
    elif decision.kind == "mode-none":
        lines.append(
            'To allow it, set [network] mode = "allowlist" and add '
            f'"{entry}" to [network] allow in hutch.toml, or run with --network allowlist '
            f"--allow {target}."
        )
    elif decision.kind == "traffic":
        lines.append("The allowlist permits this host, but not what the connection sent.")
    return "\n".join(lines) + "\n"
