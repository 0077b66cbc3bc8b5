"""hutch: run AI coding agents in a locked container."""

__version__ = "0.1.0"
