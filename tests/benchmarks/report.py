"""Benchmark figures: printed, and kept in build/benchmarks/<name>.json for docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import psutil

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "benchmarks"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 0.95),
            "min": min(values), "max": max(values), "n": len(values)}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "system": platform.platform()}


def record(name: str, figures: dict[str, Any]) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=2, ensure_ascii=False))
    print(f"\n== {name} ==\n{json.dumps(figures, indent=2, ensure_ascii=False)}")
    return path
