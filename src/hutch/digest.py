"""SHA-256 without hashlib's start-up cost.

hashlib loads OpenSSL to offer every algorithm (~4 ms per start here); the
launch path needs only SHA-256, which CPython also builds as a small module of
its own (`_sha256` up to 3.11, `_sha2` from 3.12). Same algorithm, same digests.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing (see hutch.records)

if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:
        from _sha256 import sha256
    except ImportError:
        try:
            from _sha2 import sha256
        except ImportError:  # an interpreter without either: hashlib has it
            from hashlib import sha256

__all__ = ["sha256"]
