from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hutch.egress.tls import (
    MAX_CLIENT_HELLO,
    MAX_RECORDS,
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    looks_like_tls,
    parse_client_hello,
)


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def sni_extension(name: bytes) -> tuple[int, bytes]:
    return 0, vec(2, b"\x00" + vec(2, name))


def client_hello(
    server_name: str | None = "api.example.com",
    *,
    extensions: list[tuple[int, bytes]] | None = None,
    session_id: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    record_sizes: list[int] | None = None,
) -> bytes:
    exts = list(extensions or [])
    if server_name is not None:
        exts.insert(len(exts) // 2, sni_extension(server_name.encode("ascii")))
    ext_bytes = b"".join(struct.pack("!H", t) + vec(2, d) for t, d in exts)
    body = b"\x03\x03" + b"\x42" * 32 + vec(1, session_id) + vec(2, suites) + b"\x01\x00"
    body += vec(2, ext_bytes)
    message = b"\x01" + vec(3, body)
    out = b""
    sizes = list(record_sizes or [])
    while message:
        size = sizes.pop(0) if sizes else 16384
        chunk, message = message[:size], message[size:]
        out += b"\x16\x03\x01" + vec(2, chunk)
    return out


def openssl_client_hello(server_name: str | None) -> bytes:
    """A real ClientHello, as Python's ssl module (OpenSSL) sends it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_openssl_client_hello_yields_its_sni() -> None:
    hello = parse_client_hello(openssl_client_hello("api.example.com"))
    assert hello is not None
    assert hello.server_name == "api.example.com"


def test_openssl_client_hello_without_sni() -> None:
    hello = parse_client_hello(openssl_client_hello(None))
    assert hello == ClientHello(None, 0x0303)


def test_built_client_hello_round_trips() -> None:
    hello = parse_client_hello(client_hello("x.example", extensions=[(10, b"\x00\x02\x00\x1d")]))
    assert hello is not None and hello.server_name == "x.example"


def test_hello_split_over_records_and_prefixes_need_more() -> None:
    data = client_hello("split.example", record_sizes=[3, 10, 40])
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) is None
    hello = parse_client_hello(data)
    assert hello is not None and hello.server_name == "split.example"


def test_fed_in_any_pieces_the_reader_gives_the_same_hello() -> None:
    data = client_hello("pieces.example", record_sizes=[7, 100, 20])
    for size in (1, 2, 5, 64, len(data)):
        reader = ClientHelloReader()
        results = [reader.feed(data[i : i + size]) for i in range(0, len(data), size)]
        assert results[-1] == ClientHello("pieces.example", 0x0303)
        assert all(r is None for r in results[:-1])
        assert bytes(reader.data) == data  # kept whole, to be forwarded


def test_a_largest_hello_trickled_byte_by_byte_is_read() -> None:
    # 64 KiB fed one byte at a time: each byte is walked once, so this is quick;
    # re-parsing everything on every feed made it quadratic (~2^31 byte copies).
    padding = MAX_CLIENT_HELLO - 4 - 200
    data = client_hello("big.example", extensions=[(21, bytes(padding))])
    assert len(data) > MAX_CLIENT_HELLO - 200
    reader = ClientHelloReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None
    hello = reader.feed(data[-1:])
    assert hello is not None and hello.server_name == "big.example"


def test_a_hello_may_span_at_most_max_records_records() -> None:
    message_len = len(client_hello("r.example")) - 5
    sizes = [1] * (MAX_RECORDS - 1) + [message_len]
    within = parse_client_hello(client_hello("r.example", record_sizes=sizes))
    assert within is not None and within.server_name == "r.example"
    with pytest.raises(ClientHelloError, match=f"more than {MAX_RECORDS} records"):
        parse_client_hello(client_hello("r.example", record_sizes=[1] * MAX_RECORDS + [message_len]))


def test_one_byte_records_are_refused_after_the_cap_not_after_64_kib() -> None:
    # The hostile first flight: a hello announcing 64 KiB, one byte per record.
    reader = ClientHelloReader()
    record = b"\x16\x03\x01\x00\x01"
    message = b"\x01\x00\xff\xfb" + bytes(64)
    with pytest.raises(ClientHelloError, match="records"):
        for byte in message:
            reader.feed(record + bytes([byte]))
    assert len(reader.data) == (MAX_RECORDS + 1) * 6


def test_bytes_after_the_hello_are_ignored() -> None:
    data = client_hello("a.example") + b"\x17\x03\x03\x00\x01x"
    hello = parse_client_hello(data)
    assert hello is not None and hello.server_name == "a.example"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "handshake record"),
        (b"\x16\x02\x00\x00\x05hello", "record version"),
        (b"\x16\x03\x01\x00\x00", "record length"),
        (b"\x16\x03\x01\x40\x01" + b"\x00" * 16385, "record length"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "ClientHello"),
        (b"\x16\x03\x01\x00\x05\x01\x00\x00\x00\x00", "trailing data"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "too large"),
    ],
)
def test_malformed_records(data: bytes, match: str) -> None:
    with pytest.raises(ClientHelloError, match=match):
        parse_client_hello(data)


def test_two_host_names_are_rejected() -> None:
    two = vec(2, b"\x00" + vec(2, b"a.example") + b"\x00" + vec(2, b"b.example"))
    with pytest.raises(ClientHelloError, match="more than one"):
        parse_client_hello(client_hello(None, extensions=[(0, two)]))


def test_duplicate_extensions_are_rejected() -> None:
    with pytest.raises(ClientHelloError, match="duplicate"):
        parse_client_hello(client_hello("a.example", extensions=[(0, vec(2, b"\x00" + vec(2, b"b")))]))


@pytest.mark.parametrize("name", [b"", "bücher".encode()], ids=["empty", "non-ascii"])
def test_bad_host_names_are_rejected(name: bytes) -> None:
    with pytest.raises(ClientHelloError):
        parse_client_hello(client_hello(None, extensions=[sni_extension(name)]))


def test_looks_like_tls() -> None:
    assert looks_like_tls(b"\x16\x03\x01")
    assert not looks_like_tls(b"SSH-2.0-OpenSSH\r\n")
    assert not looks_like_tls(b"")


# -- fuzzing -------------------------------------------------------------------

label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)
hostnames = st.lists(label, min_size=1, max_size=5).map(".".join)
other_extensions = st.lists(
    st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=300)),
    max_size=8,
    unique_by=lambda ext: ext[0],
)


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(
    name=st.one_of(st.none(), hostnames),
    extensions=other_extensions,
    session_id=st.binary(max_size=32),
    suites=st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=40).map(b"".join),
    record_sizes=st.lists(st.integers(1, 600), max_size=6),
)
def test_generated_hellos_round_trip(
    name: str | None,
    extensions: list[tuple[int, bytes]],
    session_id: bytes,
    suites: bytes,
    record_sizes: list[int],
) -> None:
    data = client_hello(
        name,
        extensions=extensions,
        session_id=session_id,
        suites=suites,
        record_sizes=record_sizes,
    )
    hello = parse_client_hello(data)
    assert hello is not None
    assert hello.server_name == name
    assert parse_client_hello(data[: len(data) - 1]) is None


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_client_hello_error(data: bytes) -> None:
    try:
        parse_client_hello(data)
    except ClientHelloError:
        pass


@settings(deadline=None)  # timing on a shared, loaded machine is noise
@given(st.binary(max_size=600))
def test_arbitrary_bytes_in_a_handshake_record(data: bytes) -> None:
    record = b"\x16\x03\x01" + vec(2, data[:16384])
    try:
        parse_client_hello(record)
    except ClientHelloError:
        pass


@settings(max_examples=300, deadline=None)
@given(hostnames, st.data())
def test_mutated_hellos_raise_only_client_hello_error(name: str, data: st.DataObject) -> None:
    original = bytearray(client_hello(name, extensions=[(10, b"\x00\x02\x00\x1d")]))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(original) - 1))
        original[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    try:
        parse_client_hello(bytes(original[:cut]))
    except ClientHelloError:
        pass
