"""Metrics for tests, read through prometheus_client's public API: the in-process registry,
or a worker's /metrics over HTTP parsed as Prometheus text."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from cleanup_worker.observability import metrics


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of this process's registry (0 when it has not been observed yet)."""
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


def sample_total(name: str, **match: str) -> float:
    """The sum of this process's `name` samples over every label set that contains `match`."""
    wanted = set(match.items())
    return sum(
        s.value
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == name and wanted <= set(s.labels.items())
    )


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer, parsed."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's value (0 when absent)."""
        return self.samples.get((name, frozenset((labels or {}).items())), 0.0)

    def total(self, name: str, **match: str) -> float:
        """The sum of `name` over every label set that contains `match`."""
        wanted = set(match.items())
        return sum(v for (n, labels), v in self.samples.items() if n == name and wanted <= labels)

    def buckets(self, histogram: str) -> dict[float, float]:
        """A histogram's cumulative buckets: upper bound -> count."""
        return {
            float(dict(labels)["le"]): v
            for (n, labels), v in self.samples.items()
            if n == f"{histogram}_bucket"
        }


async def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> Scrape:
    """GET /metrics of a worker on `port`, parsed. A worker that is not listening yet raises
    OSError (aiohttp's connection errors are OSErrors)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(f"http://{host}:{port}/metrics") as response,
    ):
        response.raise_for_status()
        body = await response.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    return Scrape(samples)
