"""Smoke tests of the benchmark runner (``python -m benchmarks``): the JSON's shape and the
skipping of absent peers. They check that the runner runs, not how fast anything is."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as runner
from benchmarks._systems import SYSTEMS, Systems

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"scenario", "system", "metric", "unit", "value", "params"}


def _check_shape(document: dict[str, Any], quick: bool) -> None:
    assert set(document) >= {"redis", "machine", "quick", "results", "skipped"}
    assert set(document["redis"]) == {"version", "server"}
    assert document["redis"]["version"] not in ("", "?")
    assert document["machine"]["cpu_count"] >= 1
    assert document["quick"] is quick
    for row in document["results"]:
        assert set(row) == ROW_KEYS, row
        assert row["system"] in SYSTEMS
        assert isinstance(row["value"], float | int)
        assert row["value"] > 0
        assert row["params"]["rounds"] >= 1
    for entry in document["skipped"]:
        assert entry["system"] in SYSTEMS
        assert entry["reason"]


@pytest.mark.timeout(180)  # a cold Go build of benchmarks/go may take a minute
def test_quick_json_shape(server_url: str, tmp_path: Path) -> None:
    """``--quick --only`` two cheap scenarios writes the documented JSON; the skipped
    systems (here: the ones disabled with --without) are listed with their reasons."""
    out = tmp_path / "out.json"
    command = [
        sys.executable, "-m", "benchmarks", "--quick", "--smoke",
        "--only", "stream.add,rmap.get", "--without", "coredis-raw,redis-benchmark",
        "--redis-url", server_url, "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    _check_shape(document, quick=True)
    measured = {(r["scenario"], r["system"]) for r in document["results"]}
    assert ("stream.add", "pulse-trio") in measured
    assert ("rmap.get", "pulse-trio") in measured
    assert ("rmap.get", "dict") in measured
    skipped = {(e["scenario"], e["system"]): e["reason"] for e in document["skipped"]}
    assert "disabled by --without" in skipped["stream.add", "coredis-raw"]
    assert "disabled by --without" in skipped["stream.add", "redis-benchmark"]
    # A system is either measured or skipped with a reason, never silently missing.
    for scenario, systems in (
        ("stream.add", ("pulse-trio", "go-pulse", "coredis-raw", "redis-py-raw")),
        ("rmap.get", ("pulse-trio", "go-pulse", "dict")),
    ):
        for system in systems:
            assert ((scenario, system) in measured) != ((scenario, system) in skipped)
    assert "skipped" in done.stdout


def test_absent_packages_are_skipped_not_crashes(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With coredis and redis-py "not installed" (the README's plain install), the runner
    completes, skips the raw clients with the install hint and still writes its JSON."""
    real_find_spec = importlib.util.find_spec
    hidden = {"coredis", "redis", "streaq"}

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in hidden else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert "not installed" in (Systems().unavailable("streaq") or "")
    out = tmp_path / "out.json"
    code = runner.main(
        [
            "--smoke",
            "--only",
            "stream.add",
            "--without",
            "go-pulse,redis-benchmark",
            "--redis-url",
            server_url,
            "--json",
            str(out),
        ]
    )
    assert code == 0
    document = json.loads(out.read_text())
    _check_shape(document, quick=False)
    skipped = {(e["scenario"], e["system"]): e["reason"] for e in document["skipped"]}
    assert "coredis not installed" in skipped["stream.add", "coredis-raw"]
    assert "redis not installed" in skipped["stream.add", "redis-py-raw"]
    assert [r["system"] for r in document["results"]] == ["pulse-trio"]


def test_unknown_names_are_rejected() -> None:
    """A mistyped scenario or system stops the runner with a message naming the known ones."""
    with pytest.raises(SystemExit, match=r"unknown scenario stream\.nope .*stream\.add"):
        runner.main(["--only", "stream.nope"])
    with pytest.raises(SystemExit, match="unknown system celery"):
        runner.main(["--without", "celery"])


@pytest.mark.timeout(120)
# streaq 7.2's worker leaves its internal memory stream open when it is cancelled, its only
# way to stop without signal handlers (streaq/worker.py, run_async): streaq's leak, not ours.
@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObjectReceiveStream:ResourceWarning")
def test_queue_split_over_two_processes(server_url: str) -> None:
    """A queue's 2-process jobs case runs half its workers in a child process, and every job
    is counted, whichever process ran it; streaq still works after taskiq renamed the task
    function it registered (a shared function made streaq's child drop every job)."""
    from benchmarks import _runner, _scenarios

    missing = [
        m for m in ("streaq", "taskiq", "taskiq_redis") if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[bench]')")
    env = _runner.Env(url=server_url, size="smoke", backend="trio", systems=Systems())
    taskiq = _scenarios._queue_jobs("taskiq", env, 40, 5, 1, 0, processes=1)
    assert taskiq.values["jobs/s"] > 0
    streaq = _scenarios._queue_jobs("streaq", env, 40, 5, 4, 0, processes=2)
    assert streaq.values["jobs/s"] > 0
    # The child reported what it ran (the parent counted the rest): together, all 40.
    assert 0 < streaq.extra["child_jobs"] <= 40


def test_only_selects_cases_of_a_scenario_by_their_name() -> None:
    """``--only scale.rebalance`` runs the rebalance cases of ``scale`` alone; a scenario also
    named whole runs whole; a name that no scenario owns is rejected."""
    assert runner._scenario_names("scale.rebalance") == (["scale"], {"scale": {"scale.rebalance"}})
    assert runner._scenario_names("scale.rebalance,scale") == (["scale"], {})
    assert runner._scenario_names("scale.cluster.rebalance,stream.add") == (
        ["scale.cluster", "stream.add"],
        {"scale.cluster": {"scale.cluster.rebalance"}},
    )
    with pytest.raises(SystemExit, match=r"unknown scenario pool\.nope"):
        runner._scenario_names("pool.nope")
