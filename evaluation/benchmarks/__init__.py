"""The benchmark adapters by --benchmark name: one module per benchmark, imported when asked for."""
from __future__ import annotations

from importlib import import_module

from evaluation.benchmarks.base import Benchmark

# name -> module under evaluation/benchmarks/ holding that benchmark's adapter as `ADAPTER` (a Benchmark subclass)
ADAPTERS: dict[str, str] = {
    "mmmu": "mmmu",
    "mmbench": "mmbench",
    "mathvista": "mathvista",
    "mathvision": "mathvision",
    "refcoco": "refcoco",
    "screenspot_v2": "screenspot",
    "screenspot_pro": "screenspot",
    "osworld_g": "osworld_g",
    "countbench": "countbench",
    "chartqa": "chartqa",
    "docvqa": "docvqa",
    "charades_sta": "charades_sta",
}


SYNTHETIC_PREFIX = "synthetic_"  # synthetic_<task>: the held-out suite of the synthetic data (synthetic.py)


def benchmark(name: str, scoring) -> Benchmark:
    """The adapter of benchmark `name` built with `scoring` (a ScoringConfig); ValueError naming the known ones."""
    module_name = "synthetic" if name.startswith(SYNTHETIC_PREFIX) else ADAPTERS.get(name)
    if module_name is None:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(ADAPTERS))} and synthetic_<task>")
    module = import_module(f"evaluation.benchmarks.{module_name}")
    adapters = module.ADAPTERS if hasattr(module, "ADAPTERS") else {module.ADAPTER.name: module.ADAPTER}
    if name not in adapters:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(adapters))}")
    return adapters[name](scoring)
