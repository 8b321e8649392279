"""Chaos campaigns: break parts of the running system on purpose and measure what clients see and how fast it heals."""
