"""Just enough TLS to read the server name (SNI) from a client's first flight.

Pure: bytes in, `ClientHello` (or "need more bytes") out. Anything that is not a
well-formed ClientHello raises `ClientHelloError`, which the proxy turns into a
closed tunnel; it never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

RECORD_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
NAME_TYPE_HOST = 0x00

# A plaintext record body is at most 2^14 bytes (RFC 8446, 5.1). Real
# ClientHellos, post-quantum key shares included, are a few KiB in one or two
# records (clients fragment only at 2^14); the caps keep a hostile client from
# making the proxy buffer or walk more than that before it decides.
MAX_RECORD = 1 << 14
MAX_CLIENT_HELLO = 1 << 16
MAX_RECORDS = 16


class ClientHelloError(ValueError):
    """The bytes are not a well-formed TLS ClientHello."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None
    legacy_version: int


def looks_like_tls(data: bytes) -> bool:
    """True when `data` starts like a TLS handshake record (the client's first flight)."""
    return len(data) >= 1 and data[0] == RECORD_HANDSHAKE


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse the ClientHello at the start of `data`; None when more bytes are needed.

    Raises `ClientHelloError` when the bytes cannot be a ClientHello.
    """
    return ClientHelloReader().feed(data)


class ClientHelloReader:
    """Reads the ClientHello of a client's first flight as its bytes arrive.

    Each byte is looked at once, however the client splits its writes: `feed`
    walks only the records completed since the last call, so a client that
    trickles its hello costs time linear in what it sent. The handshake message
    may span up to `MAX_RECORDS` records; they are reassembled.
    """

    def __init__(self) -> None:
        self.data = bytearray()  # everything fed, to be forwarded once the hello passes
        self._offset = 0  # where the next record starts
        self._records = 0
        self._message = bytearray()
        self._needed: int | None = None

    def feed(self, chunk: bytes) -> ClientHello | None:
        """Add received bytes; the ClientHello once it is whole, else None.

        Raises `ClientHelloError` as soon as the bytes cannot be a ClientHello.
        """
        self.data += chunk
        data, message = self.data, self._message
        while self._needed is None or len(message) < self._needed:
            offset = self._offset
            if len(data) - offset < 5:
                return None
            content_type, major, length = data[offset], data[offset + 1], _u16(data, offset + 3)
            if content_type != RECORD_HANDSHAKE:
                raise ClientHelloError(f"expected a handshake record, got content type {content_type}")
            if major != 3:
                raise ClientHelloError(f"unsupported record version {major}.{data[offset + 2]}")
            if length == 0 or length > MAX_RECORD:
                raise ClientHelloError(f"bad record length {length}")
            if len(data) - offset - 5 < length:
                return None
            self._records += 1
            if self._records > MAX_RECORDS:
                raise ClientHelloError(f"ClientHello spread over more than {MAX_RECORDS} records")
            message += data[offset + 5 : offset + 5 + length]
            self._offset = offset + 5 + length
            if self._needed is None and len(message) >= 4:
                if message[0] != HANDSHAKE_CLIENT_HELLO:
                    raise ClientHelloError(f"expected a ClientHello, got handshake type {message[0]}")
                self._needed = 4 + int.from_bytes(message[1:4], "big")
                if self._needed > MAX_CLIENT_HELLO:
                    raise ClientHelloError(f"ClientHello of {self._needed} bytes is too large")
        if len(message) != self._needed:
            # Another handshake message shares the last record: not a client's first flight.
            raise ClientHelloError("trailing data after the ClientHello")
        return _parse_body(_Reader(bytes(message[4:])))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise ClientHelloError("ClientHello is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_size), "big"))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _u16(data: bytes | bytearray, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


def _parse_body(body: _Reader) -> ClientHello:
    legacy_version = body.u16()
    if legacy_version >> 8 != 3:
        raise ClientHelloError(f"unsupported ClientHello version {legacy_version:#06x}")
    body.take(32)  # random
    if len(body.vector(1)) > 32:
        raise ClientHelloError("session id longer than 32 bytes")
    suites = body.vector(2)
    if not suites or len(suites) % 2:
        raise ClientHelloError("bad cipher suite list")
    if not body.vector(1):
        raise ClientHelloError("empty compression method list")
    if body.done():
        # Extensions are optional before TLS 1.2; such a client sends no SNI.
        return ClientHello(None, legacy_version)
    extensions = _Reader(body.vector(2))
    if not body.done():
        raise ClientHelloError("trailing bytes after the extensions")
    seen: set[int] = set()
    server_name: str | None = None
    while not extensions.done():
        ext_type = extensions.u16()
        ext_data = extensions.vector(2)
        if ext_type in seen:
            raise ClientHelloError(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        if ext_type == EXT_SERVER_NAME:
            server_name = _parse_server_name(_Reader(ext_data))
    return ClientHello(server_name, legacy_version)


def _parse_server_name(ext: _Reader) -> str:
    names = _Reader(ext.vector(2))
    if not ext.done():
        raise ClientHelloError("trailing bytes in the server_name extension")
    host: str | None = None
    while not names.done():
        name_type = names.u8()
        name = names.vector(2)
        if name_type != NAME_TYPE_HOST:
            continue
        if host is not None:
            raise ClientHelloError("more than one host_name in the server_name extension")
        if not name:
            raise ClientHelloError("empty host_name")
        try:
            host = name.decode("ascii")
        except UnicodeDecodeError as err:
            raise ClientHelloError("host_name is not ASCII") from err
    if host is None:
        raise ClientHelloError("server_name extension without a host_name")
    return host
