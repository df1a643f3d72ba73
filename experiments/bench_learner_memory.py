"""Peak memory of a learner update, per VLA family (JSON on stdout, and to --out): the peak RSS of one update (the KL
reference pass + PPO minibatch steps on LoRA) with the project's adapter-free reference, without any reference, and
with a second frozen copy as the reference (the design the adapter-free one avoids); each arm in a fresh subprocess,
arms alternated. docs/benchmarks.md shows the result.

    python experiments/bench_learner_memory.py --out docs/bench_policy_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_policy import FAMILY_NAMES, machine, random_obs  # noqa: E402  (the policy benchmarks' shared helpers)

MEMORY_ARMS = ("none", "adapter_off", "copy")  # no reference pass; VLAPolicy.reference(); a frozen deep copy
# glibc's dynamic mmap threshold lets freed tensors stay resident in the heap, so peak RSS swung by ~250 MB between
# identical runs; a fixed threshold maps every tensor >= 64 KiB on its own and unmaps it when freed (runs agree to ~1 MB)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _peak_rss_mb() -> float:
    """The process's peak resident set size since start or since `_reset_peak_rss` (Linux: /proc/self/status)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _reset_peak_rss() -> bool:
    """Lower the peak-RSS mark to the current RSS (Linux >= 4.0: `5` to /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def learner_update_peak(family: str, arm: str, args) -> dict:
    """One learner update as `vla-rl train` runs it, in this process: build the family's policy (+ a frozen copy for
    arm "copy"), LoRA r 16, AdamW; a `batch`-row rollout of random observations and bins; reset the peak-RSS mark;
    then the reference pass (no grad, in chunks of 64, keeping the (B, K·D, 256) bin distributions) unless arm is
    "none", and `batch / minibatch` PPO-shaped steps (policy-gradient + value + exact KL to the reference) with
    backward and AdamW. Returns the peak RSS of that update (the copy's weights, resident before the reset, count)."""
    import contextlib
    import copy

    from vla_rl.policy import ActionTokenizer, build_policy
    from vla_rl.rl.ppo_math import exact_kl

    torch.set_num_threads(1)  # the learner's default (learner_threads 1)
    torch.manual_seed(0)
    at = ActionTokenizer(tuple([-1.0] * args.action_dim), tuple([1.0] * args.action_dim))
    policy = build_policy(at, state_dim=4, image_size=(args.image_size, args.image_size), family=family,
                          preset=args.preset, chunk_size=args.chunk_size)
    frozen = copy.deepcopy(policy).eval().requires_grad_(False) if arm == "copy" else None
    policy.add_lora(r=16, alpha=32)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    obs = {k: torch.as_tensor(v) for k, v in random_obs(args.batch, args.image_size, 4, seed=1).items()}
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, at.n_bins, (args.batch, policy.spec.n_action_tokens), generator=g) + policy.action_tokenizer.token_offset
    adv, ret = torch.randn(args.batch, generator=g), torch.randn(args.batch, generator=g)
    setup_mb = _peak_rss_mb()
    reset = _reset_peak_rss()
    start_mb = _peak_rss_mb()
    t = time.perf_counter()
    ref = None
    if arm != "none":
        reference = frozen if frozen is not None else policy
        parts = []
        policy.eval()
        with torch.no_grad(), policy.reference() if frozen is None else contextlib.nullcontext():
            for i in range(0, args.batch, 64):
                parts.append(reference.evaluate({k: v[i:i + 64] for k, v in obs.items()}, tokens[i:i + 64]).bin_logp)
        ref = torch.cat(parts)
    policy.train()
    for i in range(0, args.batch, args.minibatch):
        sl = slice(i, i + args.minibatch)
        ev = policy.evaluate({k: v[sl] for k, v in obs.items()}, tokens[sl])
        loss = -(ev.logp.sum(-1) * adv[sl]).mean() + 0.5 * ((ev.value - ret[sl]) ** 2).mean()
        if ref is not None:
            loss = loss + 0.01 * exact_kl(ev.bin_logp, ref[sl]).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"family": family, "arm": arm, "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_at_reset_mb": round(start_mb, 1),
            "setup_peak_rss_mb": round(setup_mb, 1), "peak_reset": reset, "update_s": round(time.perf_counter() - t, 2)}


def bench_memory(args) -> dict:
    """Per family, the arms in fresh subprocesses (alternated, `--repeats` rounds): peak RSS of one learner update."""
    runs: dict = {}
    for _ in range(args.repeats):
        for family in args.families:
            for arm in MEMORY_ARMS:
                cmd = [sys.executable, __file__, "--child", f"{family}:{arm}", "--batch", str(args.batch),
                       "--minibatch", str(args.minibatch), "--preset", args.preset, "--image_size", str(args.image_size),
                       "--action_dim", str(args.action_dim), "--chunk_size", str(args.chunk_size)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **MALLOC_ENV})
                row = json.loads(res.stdout.strip().splitlines()[-1])
                runs.setdefault(family, {}).setdefault(arm, []).append(row)
                print(json.dumps(row), file=sys.stderr)
    rows = []
    for family, arms in runs.items():
        peak = {arm: statistics.median(r["peak_rss_mb"] for r in arms[arm]) for arm in MEMORY_ARMS}
        above = {arm: statistics.median(r["peak_rss_mb"] - r["rss_at_reset_mb"] for r in arms[arm]) for arm in MEMORY_ARMS}
        rows.append({"family": family, "peak_rss_mb": {a: round(v, 1) for a, v in peak.items()},
                     "peak_rss_mb_range": {a: [min(r["peak_rss_mb"] for r in arms[a]), max(r["peak_rss_mb"] for r in arms[a])]
                                           for a in MEMORY_ARMS},
                     "update_above_start_mb": {a: round(v, 1) for a, v in above.items()},
                     "reference_extra_fraction": round(peak["adapter_off"] / peak["none"] - 1, 4),
                     "copy_extra_fraction": round(peak["copy"] / peak["none"] - 1, 4),
                     "update_s_median": round(statistics.median(r["update_s"] for a in MEMORY_ARMS for r in arms[a]), 2),
                     "runs": arms})
    return {"bench": "memory", "preset": args.preset, "batch": args.batch, "minibatch": args.minibatch,
            "reference_chunk": 64, "image_size": args.image_size, "tokens_per_decision": args.chunk_size * args.action_dim,
            "repeats": args.repeats, "lora_r": 16, "torch_threads": 1, "arms": {
                "none": "no reference pass, no KL term", "adapter_off": "VLAPolicy.reference(): the same weights with "
                "the LoRA adapters disabled (the project's design)", "copy": "a frozen deep copy of the policy as the "
                "reference (what adapter-free avoids)"},
            "measure": "peak RSS (VmHWM) of the update in a fresh process, the mark reset after setup; MB; medians",
            "allocator_env": MALLOC_ENV,
            "rows": rows, "machine": machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", type=lambda x: x.split(","), default=list(FAMILY_NAMES))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=128, help="rollout rows per update (the reference pass scores them "
                    "all, 4 KB each at D 4; the peak is set by one minibatch's forward and backward)")
    ap.add_argument("--minibatch", type=int, default=64, help="rows per PPO step (the train default)")
    ap.add_argument("--action_dim", type=int, default=4, help="D (Meta-World: 4)")
    ap.add_argument("--chunk_size", type=int, default=1)
    ap.add_argument("--image_size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)  # FAMILY:ARM — one measurement, in this process
    ap.add_argument("--out", default="", help="also write the JSON result here")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(learner_update_peak(*args.child.split(":"), args)))
        return
    text = json.dumps(bench_memory(args), indent=2)
    print(text)
    if args.out:
        from vla_rl.base.atomic_io import atomic_write_text

        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
