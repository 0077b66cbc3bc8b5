from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch.egress.policy import (
    AllowEntry,
    Decision,
    HostError,
    Policy,
    denial_message,
    denied_range,
    normalise_host,
    parse_allow_entry,
    plaintext_denial,
    sni_denial,
)

PUBLIC = "203.0.113.5"  # RFC 5737 documentation range: must stay allowed


class FakeResolver:
    """Maps names to addresses and records every lookup; unknown names fail like DNS does."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return self.table[host]


def policy(
    *allow: str,
    private: tuple[str, ...] = (),
    table: dict[str, list[str]] | None = None,
    mode: str = "allowlist",
) -> tuple[Policy, FakeResolver]:
    resolver = FakeResolver(table if table is not None else {})
    assert mode in ("allowlist", "open", "none")
    built = Policy.from_config(
        "allowlist" if mode == "allowlist" else "open" if mode == "open" else "none",
        allow,
        private,
        resolver=resolver,
    )
    return built, resolver


# -- entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "wildcard"),
    [
        ("example.com", "example.com", 443, False),
        ("example.com:8443", "example.com", 8443, False),
        ("Example.COM.", "example.com", 443, False),
        ("*.githubusercontent.com", "githubusercontent.com", 443, True),
        ("*.example.org:22", "example.org", 22, True),
        ("bücher.de", "xn--bcher-kva.de", 443, False),
        ("127.0.0.1:8080", "127.0.0.1", 8080, False),
        ("[::1]:8080", "::1", 8080, False),
        ("::1", "::1", 443, False),
        ("10.1.2.3", "10.1.2.3", 443, False),
        ("example.com:65535", "example.com", 65535, False),
        ("example.com:1", "example.com", 1, False),
    ],
)
def test_parse_allow_entry_accepts(text: str, host: str, port: int, wildcard: bool) -> None:
    entry = parse_allow_entry(text)
    assert (entry.host, entry.port, entry.wildcard, entry.text) == (host, port, wildcard, text)
    assert entry.private is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "https://example.com",
        "http://example.com:80",
        "example.com/path",
        "example.com:443/",
        "example .com",
        " example.com",
        "example.com\t",
        "*",
        "*:443",
        "*.",
        "ex*ample.com",
        "*example.com",
        "example.*",
        "*.*.example.com",
        "a.*.example.com",
        "example.com:0",
        "example.com:65536",
        "example.com:99999",
        "example.com:http",
        "example.com:-1",
        "example.com:",
        ":443",
        "user@example.com",
        "user:pw@example.com:443",
        "[::1",
        "[::1]x",
        "[127.0.0.1]:80",
        "*.10.0.0.1",
        "a..b",
        "bad_label-.com",
        "999.1.1.1",
    ],
)
def test_parse_allow_entry_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="allow entry") as info:
        parse_allow_entry(text)
    assert repr(text) in str(info.value)


def test_parse_allow_entry_private_flag() -> None:
    assert parse_allow_entry("db.internal:5432", private=True).private is True


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.text(max_size=40))
def test_parse_allow_entry_raises_only_value_error(text: str) -> None:
    try:
        entry = parse_allow_entry(text)
    except ValueError:
        return
    assert isinstance(entry, AllowEntry)


# -- host normalisation ------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("169.254.169.254", "169.254.169.254"),
        ("0xA9FEA9FE", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
    ],
)
def test_every_ip_spelling_is_an_ip_literal(spelling: str, address: str) -> None:
    host = normalise_host(spelling)
    assert host.ip == ipaddress.ip_address(address)
    assert host.name == address


@pytest.mark.parametrize(
    "text",
    ["999.0.0.1", "1.2.3.4.5", "0x1.0x", "foo.123", "1.0x1g.1", "fe80::1%eth0", "::g", "[]"],
)
def test_invalid_numeric_hosts_are_rejected_not_resolved(text: str) -> None:
    with pytest.raises(HostError):
        normalise_host(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("1e100.net", "1e100.net"),
        ("0xdead.example.com", "0xdead.example.com"),
    ],
)
def test_names_are_normalised(text: str, name: str) -> None:
    assert normalise_host(text).name == name
    assert normalise_host(text).ip is None


@pytest.mark.parametrize(
    "text", ["user@example.com", "", "exa mple.com", "example.com..", "a..b", "x" * 64 + ".com"]
)
def test_bad_hosts_raise_host_error(text: str) -> None:
    with pytest.raises(HostError):
        normalise_host(text)


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.text(max_size=60))
def test_normalise_host_raises_only_host_error(text: str) -> None:
    try:
        normalise_host(text)
    except HostError:
        pass


# -- ranges ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("0.1.2.3", "this network"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.0.0.5", "private (RFC 1918)"),
        ("172.16.0.1", "private (RFC 1918)"),
        ("172.31.255.255", "private (RFC 1918)"),
        ("192.168.1.1", "private (RFC 1918)"),
        ("100.64.0.1", "shared address space (RFC 6598)"),
        ("100.127.255.254", "shared address space (RFC 6598)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "unique local"),
        ("fc00::1", "unique local"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private (RFC 1918)"),
        ("::ffff:169.254.169.254", "link-local"),
    ],
)
def test_denied_ranges_are_named(address: str, name: str) -> None:
    found = denied_range(ipaddress.ip_address(address))
    assert found is not None
    assert name in found


@pytest.mark.parametrize(
    "address",
    [PUBLIC, "198.51.100.7", "192.0.2.1", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1"],
)
def test_public_and_documentation_addresses_are_not_denied(address: str) -> None:
    assert denied_range(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("10.0.0.5", "RFC 1918"),
        ("172.20.1.1", "RFC 1918"),
        ("192.168.0.10", "RFC 1918"),
        ("100.100.100.100", "RFC 6598"),
        ("0.0.0.0", "this network"),
        ("224.1.1.1", "multicast"),
        ("250.1.1.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fd12::1", "unique local"),
    ],
)
def test_name_resolving_into_a_denied_range_is_denied(address: str, name: str) -> None:
    # Positive control first: the same name on a public address passes.
    ok, _ = policy("svc.example.com", table={"svc.example.com": [PUBLIC]})
    assert ok.decide("svc.example.com", 443).allowed

    pol, _ = policy("svc.example.com", table={"svc.example.com": [address]})
    decision = pol.decide("svc.example.com", 443)
    assert not decision.allowed
    assert decision.kind == "private"
    assert name in decision.reason
    assert decision.addresses == ()


def test_any_denied_address_among_several_denies() -> None:
    pol, _ = policy("svc.example.com", table={"svc.example.com": [PUBLIC, "10.0.0.1"]})
    assert not pol.decide("svc.example.com", 443).allowed


def test_allow_private_permits_a_name_in_private_ranges() -> None:
    table = {"db.internal": ["10.1.2.3"]}
    denied, _ = policy("db.internal:5432", table=table)
    assert not denied.decide("db.internal", 5432).allowed
    allowed, _ = policy(private=("db.internal:5432",), table=table)
    decision = allowed.decide("db.internal", 5432)
    assert decision.allowed
    assert decision.addresses == ("10.1.2.3",)
    assert decision.rule == "db.internal:5432"
    # The private permission is for that name only.
    assert not allowed.decide("db.internal", 5433).allowed


def test_documentation_range_is_allowed() -> None:
    pol, _ = policy("registry.example", table={"registry.example": [PUBLIC]})
    decision = pol.decide("registry.example", 443)
    assert decision.allowed
    assert decision.addresses == (PUBLIC,)
    assert decision.rule == "registry.example"


# -- decisions ---------------------------------------------------------------


def test_decision_pins_the_resolved_addresses_and_resolves_once() -> None:
    pol, resolver = policy("a.example", table={"a.example": [PUBLIC, "198.51.100.1"]})
    decision = pol.decide("a.example", 443)
    assert decision.addresses == (PUBLIC, "198.51.100.1")
    assert resolver.calls == [("a.example", 443)]


def test_not_listed_is_denied_without_resolving() -> None:
    pol, resolver = policy("a.example", table={"evil.example": [PUBLIC]})
    decision = pol.decide("evil.example", 443)
    assert not decision.allowed
    assert decision.kind == "not-listed"
    assert resolver.calls == []


def test_port_must_match() -> None:
    pol, _ = policy("a.example", "b.example:8443", table={"a.example": [PUBLIC], "b.example": [PUBLIC]})
    assert pol.decide("a.example", 443).allowed
    assert not pol.decide("a.example", 80).allowed
    assert pol.decide("b.example", 8443).allowed
    assert not pol.decide("b.example", 443).allowed


def test_wildcard_matches_subdomains_only() -> None:
    table = {name: [PUBLIC] for name in ("a.example.com", "x.y.example.com", "example.com")}
    table["badexample.com"] = [PUBLIC]
    pol, _ = policy("*.example.com", table=table)
    assert pol.decide("a.example.com", 443).allowed
    assert pol.decide("x.y.example.com", 443).allowed
    assert pol.decide("A.Example.COM.", 443).allowed
    assert not pol.decide("example.com", 443).allowed
    assert not pol.decide("badexample.com", 443).allowed


@pytest.mark.parametrize("spelling", ["API.GitHub.com", "api.github.com.", "API.GITHUB.COM."])
def test_case_and_trailing_dot_normalise_before_matching(spelling: str) -> None:
    pol, resolver = policy("api.github.com", table={"api.github.com": [PUBLIC]})
    decision = pol.decide(spelling, 443)
    assert decision.allowed
    assert decision.host == "api.github.com"
    assert resolver.calls == [("api.github.com", 443)]


def test_idna_names_match_either_spelling() -> None:
    pol, _ = policy("bücher.de", table={"xn--bcher-kva.de": [PUBLIC]})
    assert pol.decide("xn--bcher-kva.de", 443).allowed
    assert pol.decide("BÜCHER.de", 443).allowed


@pytest.mark.parametrize("host", ["user@example.com", "a b.example.com", "a..example.com", ""])
def test_malformed_hosts_are_denied(host: str) -> None:
    pol, _ = policy("example.com", table={"example.com": [PUBLIC]})
    decision = pol.decide(host, 443)
    assert not decision.allowed
    assert decision.kind == "invalid-host"


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "::ffff:127.0.0.1",
        "[::ffff:127.0.0.1]",
    ],
)
def test_ip_literal_spellings_denied_unless_that_address_is_listed(spelling: str) -> None:
    denied, resolver = policy("example.com", "127.0.0.2:8080")
    decision = denied.decide(spelling, 8080)
    assert not decision.allowed
    assert decision.kind == "ip-literal"
    assert resolver.calls == []
    allowed, _ = policy("127.0.0.1:8080")
    decision = allowed.decide(spelling, 8080)
    assert decision.allowed
    assert decision.addresses == ("127.0.0.1",)
    assert not allowed.decide(spelling, 8081).allowed


@pytest.mark.parametrize("spelling", ["10.1", "167772161", "0xa.0.0.1", "012.0.0.1"])
def test_short_and_legacy_private_literals(spelling: str) -> None:
    pol, _ = policy("10.0.0.1:22")
    assert pol.decide(spelling, 22).allowed
    other, _ = policy("10.0.0.2:22")
    assert not other.decide(spelling, 22).allowed


def test_ipv6_literal_only_when_listed() -> None:
    pol, _ = policy("[::1]:8080")
    assert pol.decide("::1", 8080).allowed
    assert pol.decide("[::1]", 8080).allowed
    assert not pol.decide("::2", 8080).allowed
    assert not pol.decide("[2001:db8::1]", 443).allowed


def test_public_ip_literal_is_denied_in_allowlist_mode() -> None:
    pol, _ = policy("example.com")
    decision = pol.decide(PUBLIC, 443)
    assert not decision.allowed
    assert "must be listed explicitly" in decision.reason


def test_mode_none_denies_everything() -> None:
    pol, resolver = policy("a.example", "127.0.0.1:80", table={"a.example": [PUBLIC]}, mode="none")
    for host, port in (("a.example", 443), ("127.0.0.1", 80)):
        decision = pol.decide(host, port)
        assert not decision.allowed
        assert decision.kind == "mode-none"
    assert resolver.calls == []


def test_mode_open_allows_public_names_and_literals_but_resolves() -> None:
    pol, resolver = policy(table={"any.example": [PUBLIC], "lan.example": ["192.168.1.1"]}, mode="open")
    decision = pol.decide("any.example", 8443)
    assert decision.allowed
    assert decision.rule is None
    assert decision.addresses == (PUBLIC,)
    assert resolver.calls == [("any.example", 8443)]
    assert pol.decide(PUBLIC, 443).allowed
    # Open still keeps the host, LAN and cloud metadata out unless listed.
    assert not pol.decide("lan.example", 443).allowed
    assert not pol.decide("169.254.169.254", 80).allowed
    assert not pol.decide("127.0.0.1", 80).allowed


def test_resolution_failure_is_a_denial() -> None:
    pol, _ = policy("gone.example")
    decision = pol.decide("gone.example", 443)
    assert not decision.allowed
    assert decision.kind == "unresolved"
    empty, _ = policy("empty.example", table={"empty.example": []})
    assert not empty.decide("empty.example", 443).allowed
    junk, _ = policy("junk.example", table={"junk.example": ["not-an-ip"]})
    assert not junk.decide("junk.example", 443).allowed


def test_unknown_mode_and_bad_port() -> None:
    with pytest.raises(ValueError, match="network mode"):
        Policy("closed", [])  # type: ignore[arg-type]  # the bad value under test
    pol, _ = policy("a.example")
    assert not pol.decide("a.example", 0).allowed
    assert not pol.decide("a.example", 70000).allowed


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.text(max_size=40), st.integers(min_value=-5, max_value=70000))
def test_decide_never_raises(host: str, port: int) -> None:
    pol, _ = policy("a.example", "*.b.example", "127.0.0.1:80", mode="open")
    assert isinstance(pol.decide(host, port), Decision)


# -- messages and first-flight rules ---------------------------------------


def test_denial_message_names_the_config_line_and_flag() -> None:
    pol, _ = policy("a.example")
    text = denial_message("CONNECT", pol.decide("evil.example", 443))
    assert text.startswith("hutch denied CONNECT evil.example:443: not on the allowlist.\n")
    assert '"evil.example" to [network] allow in hutch.toml' in text
    assert "--allow evil.example:443" in text
    other = denial_message("GET", pol.decide("evil.example", 80))
    assert '"evil.example:80"' in other and "--allow evil.example:80" in other


def test_denial_message_for_private_points_at_allow_private() -> None:
    pol, _ = policy("db.internal:5432", table={"db.internal": ["10.0.0.9"]})
    text = denial_message("CONNECT", pol.decide("db.internal", 5432))
    assert "10.0.0.9" in text and "private (RFC 1918)" in text
    assert '"db.internal:5432" to [network] allow_private' in text


def test_denial_message_for_ip_literal_says_list_it_explicitly() -> None:
    pol, _ = policy("a.example")
    text = denial_message("CONNECT", pol.decide("0x7f.1", 8080))
    assert "127.0.0.1 is a loopback address" in text
    assert "must be listed explicitly" in text
    assert "--allow 127.0.0.1:8080" in text
    v6 = denial_message("CONNECT", pol.decide("::1", 8080))
    assert "--allow [::1]:8080" in v6


def test_denial_message_for_mode_none() -> None:
    pol, _ = policy(mode="none")
    assert "--network allowlist" in denial_message("CONNECT", pol.decide("a.example", 443))


def _allowed(host: str, port: int = 443, address: str = PUBLIC) -> Decision:
    pol, _ = policy(f"{host}:{port}", table={host: [address]})
    decision = pol.decide(host, port)
    assert decision.allowed
    return decision


def test_sni_rules() -> None:
    named = _allowed("api.example")
    assert sni_denial(named, "api.example") is None
    assert sni_denial(named, "API.example.") is None
    reason = sni_denial(named, "evil.example")
    assert reason is not None and "SNI mismatch" in reason
    missing = sni_denial(named, None)
    assert missing is not None and "SNI missing" in missing
    assert sni_denial(named, "bad name!") is not None
    literal = _allowed("127.0.0.1", 8443)
    assert sni_denial(literal, None) is None
    assert sni_denial(literal, "evil.example") is not None


def test_plaintext_only_off_port_443() -> None:
    assert plaintext_denial(_allowed("git.example", 22)) is None
    reason = plaintext_denial(_allowed("git.example", 443))
    assert reason is not None and "443" in reason
