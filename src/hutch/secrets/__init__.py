"""Secret-file masking and the host-persistence surface.

Kept import-free so that importing the package costs nothing; use
``hutch.secrets.scan`` and ``hutch.secrets.surface`` directly.
"""
