"""Reading a node's ``GET /metrics`` in tests, with prometheus-client's own parser: what a
Prometheus server would make of it."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(slots=True)
class Scrape:
    """Every sample of one scrape, by sample name and labels; and each family's type."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in samples, f"sample {key} twice"
                samples[key] = sample.value
        return cls(samples, types)

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; KeyError if there is none."""
        return self.samples[(name, frozenset(labels.items()))]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), default)

    def label_values(self, name: str, label: str) -> set[str]:
        """The values label ``label`` takes among the samples called ``name``."""
        return {dict(labels)[label] for sample, labels in self.samples
                if sample == name and label in dict(labels)}
