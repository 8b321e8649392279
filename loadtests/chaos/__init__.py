"""Chaos campaigns: the real services under injected faults, judged against goals (`autonomic chaos ...`)."""
