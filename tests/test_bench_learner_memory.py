"""experiments/bench_learner_memory.py: each arm in its own process, the peak-RSS mark reset after setup, and the
arms measure what they say — a frozen second copy as the reference costs resident memory, the adapter-free one does
not (small preset: 17 MB of weights; 8 rows, one family, one repeat)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench_learner_memory.py"


@pytest.mark.slow  # three fresh processes, each importing torch and building a model
def test_memory_arms_in_fresh_processes_and_a_copy_costs_its_weights():
    spec = importlib.util.spec_from_file_location("bench_learner_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(families=["llava"], preset="small", batch=8, minibatch=4, action_dim=2, chunk_size=1,
                              image_size=64, repeats=1)
    out = bench.bench_memory(args)
    (row,) = out["rows"]
    runs = [r for arm in bench.MEMORY_ARMS for r in row["runs"][arm]]
    if not any(r["peak_reset"] for r in runs):
        pytest.skip("this kernel refuses /proc/self/clear_refs: the peak mark cannot be reset")
    assert len(runs) == 3 and all(r["peak_reset"] for r in runs)  # the mark was reset after setup in every process
    assert all(r["peak_rss_mb"] >= r["rss_at_reset_mb"] > 100 for r in runs)  # torch alone is > 100 MB
    peak = row["peak_rss_mb"]
    assert peak["copy"] - peak["none"] > 10  # the second copy's 17 MB stay resident
    assert peak["adapter_off"] - peak["none"] < 5  # the adapter-free reference adds no weights
