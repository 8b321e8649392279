"""Filters: keep the candidates that may serve a request."""

from scorer.plugins.filters.device_health import DeviceHealthFilter
from scorer.plugins.filters.label_selector import LabelSelectorFilter
from scorer.plugins.filters.saturation import SaturationFilter

__all__ = ["DeviceHealthFilter", "LabelSelectorFilter", "SaturationFilter"]
