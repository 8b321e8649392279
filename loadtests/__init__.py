"""Load tests (locust), trace replay and benchmark runners."""
