"""Benchmarks and load tests, grouped by what they measure: routing/, picker/, rebalance/, locust/; report/ writes
what every benchmark leaves behind. The product never imports this package."""
