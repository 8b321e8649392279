"""Stubs of `autonomic.picker` (the endpoint picker's own API)."""
