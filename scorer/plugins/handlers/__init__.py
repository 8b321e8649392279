"""Profile handlers: choose which scheduling profile runs for a request."""

from scorer.plugins.handlers.header_profile import HeaderProfileHandler
from scorer.plugins.handlers.single_profile import SingleProfileHandler

__all__ = ["HeaderProfileHandler", "SingleProfileHandler"]
