"""PNG plots of a run (matplotlib, from the ``bench`` extra): throughput bars per scenario,
latency CDFs, scaling curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._runner import Report, label

RATE_UNITS = ("jobs/s", "events/s", "ops/s")


def write_plots(report: Report, directory: Path) -> list[Path]:
    """Write the plots of ``report`` into ``directory``; return the files written.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skip = {"rounds", "min", "max", "spread_pct", "extra"}

    def case_of(row: dict[str, Any]) -> str:
        return label({k: v for k, v in row["params"].items() if k not in skip})

    # Throughput bars: one figure per scenario, one group per case, one bar per system.
    rates = [r for r in report.results if r["unit"] in RATE_UNITS]
    for scenario in dict.fromkeys(r["scenario"] for r in rates):
        rows = [r for r in rates if r["scenario"] == scenario]
        cases = list(dict.fromkeys(case_of(r) for r in rows))
        systems = list(dict.fromkeys(r["system"] for r in rows))
        fig, ax = plt.subplots(figsize=(min(12, max(6, 0.6 * len(cases) * len(systems))), 4.5))
        width = 0.8 / max(1, len(systems))
        for i, system in enumerate(systems):
            xs, ys, errs = [], [], []
            for j, case in enumerate(cases):
                row = next((r for r in rows if r["system"] == system and case_of(r) == case), None)
                if row is None:
                    continue
                xs.append(j + i * width)
                ys.append(row["value"])
                errs.append(
                    [[row["value"] - row["params"]["min"]], [row["params"]["max"] - row["value"]]]
                )
            if xs:
                lower = [e[0][0] for e in errs]
                upper = [e[1][0] for e in errs]
                ax.bar(xs, ys, width, label=system, yerr=[lower, upper], capsize=3)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(cases))])
        ax.set_xticklabels(cases, fontsize=7, rotation=15)
        ax.set_ylabel(rows[0]["unit"])
        ax.set_title(f"{scenario} (median of rounds; bars: min-max)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"{scenario}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    # Latency CDFs: one figure per (scenario, case), one curve per system (last round).
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (scenario, case, system), samples in report.samples.items():
        groups.setdefault((scenario, case), {})[system] = samples
    for (scenario, case), by_system in groups.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for system, samples in by_system.items():
            ordered = sorted(samples)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.plot(ordered, ys, label=system)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(f"{scenario} {case}: latency CDF")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"{scenario}-cdf{'-' + case.replace(' ', '_') if case else ''}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    # Scaling curves: jobs/s against workers (a line per system and process count), sink
    # events/s against instances (a line per system); on one server and on the cluster.
    curves: list[tuple[str, str, str]] = [
        ("scale.jobs", "workers", "processes"),
        ("scale.sink", "instances", "system"),
        ("scale.cluster.jobs", "workers", "processes"),
        ("scale.cluster.sink", "instances", "system"),
    ]
    for scenario, x_key, line_key in curves:
        rows = [r for r in report.results if r["scenario"] == scenario]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        lines: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            key = r["system"]
            if line_key != "system":
                key += f" {line_key}={r['params'][line_key]}"
            lines.setdefault(key, []).append((r["params"][x_key], r["value"]))
        for key, points in lines.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x_key)
        ax.set_ylabel(rows[0]["unit"])
        ax.set_title(f"{scenario}: scaling")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"{scenario}-curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
