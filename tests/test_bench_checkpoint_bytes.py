"""experiments/bench_checkpoint_bytes.py measures a run's checkpoints as the docs say: the shared base once, each
step's own bytes (links not followed)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench_checkpoint_bytes.py"


def test_measured_counts_the_shared_base_once_and_each_step(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_checkpoint_bytes", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ckpts = tmp_path / "checkpoints"
    (ckpts / "base_model").mkdir(parents=True)
    (ckpts / "base_model/model.safetensors").write_bytes(b"x" * 1000)
    for step, size in (("000005", 10), ("000010", 12)):
        (ckpts / step / "pretrained_model").mkdir(parents=True)
        (ckpts / step / "pretrained_model/adapter.safetensors").write_bytes(b"y" * size)
    (ckpts / "last").symlink_to("000010")
    m = bench.measured(tmp_path)
    assert m["shared_base_bytes"] == 1000 and m["checkpoint_bytes"] == {"000005": 10, "000010": 12}
