"""Benchmark figures: printed, and kept in build/benchmarks/<name>.json for docs/benchmarks.md.

Every benchmark states its goal through :func:`judge`: it prints whether the goal is met and
never fails on noise, but a figure past twice its goal fails the benchmark (after its raw
figures are written, so they can be looked at).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "benchmarks"
FAILS_AT = 2.0  # a figure this many times its goal is no longer noise


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p95": percentile(values, 0.95),
            "min": min(values), "max": max(values), "n": len(values)}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "system": platform.platform(),
            "load_average": os.getloadavg()}


def judge(name: str, ratio: float, goal: float, unit: str = "×") -> dict[str, Any]:
    """Print whether ``ratio`` meets ``goal`` (at most); the verdict goes into the raw figures,
    and :func:`record` fails the benchmark if the figure is past ``FAILS_AT`` × the goal."""
    met = ratio <= goal
    far_off = ratio > FAILS_AT * goal
    state = "goal met" if met else ("FAR PAST THE GOAL" if far_off else "goal NOT met (within noise margin)")
    print(f"\n[{name}] {ratio:.2f}{unit} (goal ≤ {goal:g}{unit}): {state}")
    return {"name": name, "value": ratio, "goal": goal, "unit": unit, "goal_met": met,
            "fails_above": FAILS_AT * goal, "far_off": far_off}


def record(name: str, figures: dict[str, Any], *verdicts: dict[str, Any]) -> Path:
    """Write build/benchmarks/<name>.json (one file per benchmark) and print it; then fail if
    any verdict is far past its goal."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.json"
    document = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                **figures, "goals": list(verdicts)}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False))
    print(f"\n== {name} ({path}) ==\n{json.dumps(figures, indent=2, ensure_ascii=False)}")
    for verdict in verdicts:
        print(f"[{verdict['name']}] {verdict['value']:.2f}{verdict['unit']} (goal ≤ {verdict['goal']:g}"
              f"{verdict['unit']}): {'met' if verdict['goal_met'] else 'NOT met'}")
    far = [v for v in verdicts if v["far_off"]]
    if far:
        pytest.fail("; ".join(f"{v['name']}: {v['value']:.2f}{v['unit']} is past {v['fails_above']:g}{v['unit']}"
                              f" ({FAILS_AT:g} × the goal)" for v in far))
    return path


class RssSeries:
    """The resident memory of one process sampled over a whole series (not per item), so that
    a leak shows as an end well above the start: ``with RssSeries(pid) as rss: …; rss.figures()``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.marks: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - started, self.process.memory_info().rss))
            self._stop.wait(self.interval)

    def mark(self, label: str) -> None:
        """The RSS right now, kept with a label (e.g. after each file)."""
        self.marks.append((label, self.process.memory_info().rss))

    def __enter__(self) -> RssSeries:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, self.process.memory_info().rss))

    def figures(self) -> dict[str, Any]:
        mb = 2**20
        values = [rss for _, rss in self.samples]
        return {"samples": len(values), "start_mb": values[0] / mb, "peak_mb": max(values) / mb,
                "end_mb": values[-1] / mb, "growth_end_mb": (values[-1] - values[0]) / mb,
                "growth_peak_mb": (max(values) - values[0]) / mb,
                "marks_mb": {label: rss / mb for label, rss in self.marks}}


class CpuAccount:
    """CPU seconds (user + system) that named processes, and the children this process waited
    for (the ``curl`` pipe), spend during one timed transfer: on a 2-core machine it tells
    whether a side is slower because it waits or because the cores are all busy."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def _now(self) -> dict[str, float]:
        times = {name: sum(process.cpu_times()[:2]) for name, process in self.processes.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {**times, "curl": children.ru_utime + children.ru_stime}

    @contextlib.contextmanager
    def measure(self, into: list[dict[str, float]]) -> Iterator[None]:
        before = self._now()
        yield
        after = self._now()
        into.append({name: round(after[name] - before[name], 3) for name in before})


def cpu_medians(transfers: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(t[name] for t in transfers) for name in transfers[0]} if transfers else {}


def stack_pids(data_dir: Path) -> dict[str, int]:
    """Synapse's, WsgiDAV's and the bots' pids in the test stack whose data folder is ``data_dir``
    (their command lines name a file in it)."""
    markers = {"synapse": "synapse.app.homeserver", "webdav": "wsgidav.server.server_cli", "bots": "bots"}
    found: dict[str, int] = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        argv = process.info["cmdline"] or []
        if not any(str(data_dir) in part for part in argv):
            continue
        for name, marker in markers.items():
            if marker in argv:
                found[name] = process.info["pid"]
    return found
