"""The egress filtering proxy: allowlist policy, request and TLS parsing, audit log.

Import the submodules directly (`hutch.egress.listener`, `hutch.egress.policy`, ...);
this package module stays empty so that `hutch` start-up does not pay for asyncio.
"""
