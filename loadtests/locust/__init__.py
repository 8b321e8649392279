"""Locustfiles, run by path (`locust -f loadtests/locust/gateway.py --headless ...`): gateway.py (OpenAI users
through Envoy, or any OpenAI endpoint) and picker.py (ext_proc users against the picker alone)."""
