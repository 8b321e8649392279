"""Pickers: choose the primary endpoint and its fallbacks from the scored candidates."""

from scorer.plugins.pickers.max_score import MaxScorePicker
from scorer.plugins.pickers.random_pick import RandomPicker
from scorer.plugins.pickers.weighted_random import WeightedRandomPicker

__all__ = ["MaxScorePicker", "RandomPicker", "WeightedRandomPicker"]
