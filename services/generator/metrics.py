"""Prometheus metrics of the generator: jobs in flight, provider latency, errors by code."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.in_flight = Gauge("influgen_generator_jobs_in_flight",
                               "Jobs this process is driving", registry=self.registry)
        self.latency = Histogram(
            "influgen_generator_job_seconds", "Time from claim to stored media, by provider",
            ["provider", "outcome"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800))
        self.errors = Counter("influgen_generator_errors_total",
                              "Provider and job errors by code", ["provider", "code"],
                              registry=self.registry)

    def observe(self, provider: str, outcome: str, seconds: float) -> None:
        self.latency.labels(provider, outcome).observe(seconds)
