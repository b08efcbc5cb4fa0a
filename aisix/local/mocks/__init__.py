"""Loopback mock upstreams, one per provider, for tests and local runs (dev only, never shipped)."""
