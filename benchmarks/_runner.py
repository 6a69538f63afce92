"""The side-by-side runner: cases, interleaved rounds, skips with reasons, the JSON report.

A scenario (``jobs.throughput``, ``stream.add``...) is a list of :class:`Case`\\ s; a case is one
configuration (its ``params``) measured on several systems. The runner measures a case in
rounds: in every round each available system runs once, in the same order, on the same
server, so a load spike on the machine hits them alike. The first round is a warm-up and is
dropped; each metric's value is the median of the other rounds, with their min and max in
``params``. A system that is not installed, or whose measurement fails, is skipped with the
reason, never a crash.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from ._systems import SYSTEMS, Systems


@attrs.define
class Measurement:
    """What one system measured in one round.

    Attributes:
        values: Metric name -> number (the case's ``metrics`` give units).
        samples_ms: Latency samples of this round (for the CDF plots), if any.
        extra: Anything else worth keeping (e.g. go-pulse's ``DispatchJob`` stalls).
    """

    values: dict[str, float]
    samples_ms: list[float] = attrs.field(factory=list)
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Env:
    """What a measurement needs: the server, the sizes, the systems, the pulse-trio backend."""

    url: str
    size: str  # "full", "quick" or "smoke"
    backend: str
    systems: Systems
    #: A 3-master Redis Cluster's URL, for the ``scale.cluster`` cases (None: not started).
    cluster_url: str | None = None

    def n(self, full: int, quick: int, smoke: int) -> int:
        """The count for this run's size."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.size]


Measure = Callable[[str, Env], Measurement]


@attrs.frozen
class Case:
    """One configuration of a scenario, measured on ``systems``.

    Attributes:
        scenario: The scenario's name (``stream.sink``).
        params: The configuration (``{"instances": 2, "ack": "await"}``), copied to each row.
        systems: The systems to compare, in table order; pulse-trio first.
        metrics: ``(metric, unit)`` pairs every measurement returns.
        measure: ``measure(system, env)`` runs one round of one system (blocking).
        rounds: Measured rounds (the runner adds one warm-up round when ``warmup``).
        warmup: Whether to run (and drop) a first round.
        unsupported: System -> why that system cannot do this case (e.g. no batch add).
    """

    scenario: str
    params: dict[str, Any]
    systems: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]
    measure: Measure
    rounds: int = 3
    warmup: bool = True
    unsupported: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class Report:
    """Everything a run produced: rows, skips, samples for plots."""

    results: list[dict[str, Any]] = attrs.field(factory=list)
    skipped: list[dict[str, Any]] = attrs.field(factory=list)
    #: (scenario, params label, system) -> samples of the last round, for CDFs.
    samples: dict[tuple[str, str, str], list[float]] = attrs.field(factory=dict)
    #: Scenario -> seconds it took (every round and system, set-up included).
    elapsed: dict[str, float] = attrs.field(factory=dict)

    def skip(self, scenario: str, system: str, reason: str, params: dict[str, Any]) -> None:
        """Record (and print) that ``system`` was not measured in ``scenario``."""
        entry = {"scenario": scenario, "system": system, "reason": reason, "params": params}
        if entry not in self.skipped:
            self.skipped.append(entry)
            print(f"  skipped {system} in {scenario} {label(params)}: {reason}", file=sys.stderr)


def label(params: dict[str, Any]) -> str:
    """A short text form of a case's params (``producers=64 processes=1``)."""
    return " ".join(f"{k}={v}" for k, v in params.items())


class Progress:
    """One progress bar per scenario (rich when installed, plain lines otherwise)."""

    def __init__(self) -> None:
        try:
            import rich.progress
        except ImportError:
            self._rich: Any = None
        else:
            self._rich = rich.progress

    @contextmanager
    def scenario(self, name: str, total: int) -> Iterator[Callable[[str], None]]:
        """Yield ``step(description)``, called after each system-round."""
        if self._rich is None:
            print(f"{name}: {total} measurements", file=sys.stderr, flush=True)
            yield lambda description: None
            return
        rp = self._rich
        columns = (
            rp.TextColumn("{task.fields[scenario]:<18}"),
            rp.BarColumn(),
            rp.MofNCompleteColumn(),
            rp.TimeElapsedColumn(),
            rp.TextColumn("{task.description}"),
        )
        from rich.console import Console

        with rp.Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task("", total=total, scenario=name)

            def step(description: str) -> None:
                bar.update(task, advance=1, description=description)

            yield step


def run_case(case: Case, env: Env, report: Report, step: Callable[[str], None]) -> None:
    """Measure ``case`` on its available systems, interleaved round by round."""
    systems: list[str] = []
    for system in case.systems:
        assert system in SYSTEMS, system
        reason = case.unsupported.get(system) or env.systems.unavailable(system)
        if reason is None:
            systems.append(system)
        else:
            report.skip(case.scenario, system, reason, case.params)
    rounds = case.rounds + (1 if case.warmup else 0)
    kept: dict[str, list[Measurement]] = {s: [] for s in systems}
    failed: dict[str, str] = {}
    for index in range(rounds):
        for system in systems:
            step(f"{system} round {index + 1}/{rounds} {label(case.params)}")
            if system in failed:
                continue
            try:
                measurement = case.measure(system, env)
            except Exception as exc:
                failed[system] = _describe(exc)
                traceback.print_exc(file=sys.stderr)
                continue
            if index > 0 or not case.warmup:
                kept[system].append(measurement)
    for system, reason in failed.items():
        report.skip(case.scenario, system, f"failed: {reason}", case.params)
    for system in systems:
        if system in failed or not kept[system]:
            continue
        _rows(case, system, kept[system], report)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]


def _rows(case: Case, system: str, measurements: list[Measurement], report: Report) -> None:
    for metric, unit in case.metrics:
        values = [m.values[metric] for m in measurements if metric in m.values]
        if not values:
            continue
        median = statistics.median(values)
        params = {
            **case.params,
            "rounds": len(values),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
            "spread_pct": round(100 * (max(values) - min(values)) / median, 1) if median else 0,
        }
        if measurements[-1].extra:
            params["extra"] = dict(measurements[-1].extra)
        report.results.append(
            {
                "scenario": case.scenario,
                "system": system,
                "metric": metric,
                "unit": unit,
                "value": round(median, 4),
                "params": params,
            }
        )
    if measurements[-1].samples_ms and any(unit == "ms" for _, unit in case.metrics):
        report.samples[(case.scenario, label(case.params), system)] = measurements[-1].samples_ms


def run_scenarios(
    scenarios: dict[str, list[Case]], env: Env, report: Report, progress: Progress
) -> None:
    """Run every case of every scenario, one progress bar per scenario."""
    for name, cases in scenarios.items():
        total = sum(
            (c.rounds + (1 if c.warmup else 0)) * len(c.systems) for c in cases if c.systems
        )
        started = time.perf_counter()
        with progress.scenario(name, total) as step:
            for case in cases:
                run_case(case, env, report, step)
        report.elapsed[name] = round(time.perf_counter() - started, 1)


def table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a text table: one line per (scenario, params, metric), one column per
    system with its value, and its ratio to pulse-trio."""
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in results)]
    keyed: dict[tuple[str, str, str, str], dict[str, float]] = {}
    skip = {"rounds", "min", "max", "spread_pct", "extra"}
    for r in results:
        shown = {k: v for k, v in r["params"].items() if k not in skip}
        key = (r["scenario"], label(shown), r["metric"], r["unit"])
        keyed.setdefault(key, {})[r["system"]] = r["value"]
    header = ["scenario", "case", "metric", "unit", *systems]
    lines = []
    for (scenario, case, metric, unit), by_system in keyed.items():
        base = by_system.get("pulse-trio")
        cells = []
        for s in systems:
            if s not in by_system:
                cells.append("-")
                continue
            text = _fmt(by_system[s], unit)
            if s != "pulse-trio" and base:
                text += f" ({by_system[s] / base:.2f}x)"
            cells.append(text)
        lines.append([scenario, case, metric, unit, *cells])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i >= 4 else c.ljust(widths[i]) for i, c in enumerate(row)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    note = "(in parentheses: the system's value divided by pulse-trio's, same run)"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines), note])


def _fmt(value: float, unit: str) -> str:
    if unit in ("ms", "MB"):
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def now() -> float:
    """Monotonic seconds (one name for the runner's own timing)."""
    return time.perf_counter()
