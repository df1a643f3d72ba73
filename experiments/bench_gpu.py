"""GPU check of a 1B-shaped VLA built from configs (no download): frozen base weights in bf16, LoRA and value
head in fp32 — one PPO-shaped forward/backward/AdamW step timed, and greedy decoding throughput with the KV cache
vs the naive loop. JSON on stdout (and to --out).

    python experiments/bench_gpu.py --preset 1b --batch 16 --repeats 10 [--out bench_gpu.json]

Needs a CUDA GPU, torch, transformers, peft and tokenizers; no simulator (the instruction corpus is built in).
The "1b" preset is SigLIP-so400m-shaped vision (1152 × 27 layers, patch 14, 224 px) + a Llama-3.2-1B-shaped LM
(2048 × 16 layers, 32 heads, MLP 8192) with a small local BPE vocabulary — the shape of a 1B VLA (1.51 B parameters,
vision 0.43 B; LoRA r 16 on every LM projection: 12.1 M), random weights. Dry run on CPU:
`--device cpu --preset tiny --image 64 --batch 4 --repeats 2`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

INSTRUCTIONS = ["open the drawer", "close the drawer", "push the puck to the goal", "pick up the block",
                "touch the red block", "press the button"]


def encode(text: str, length: int = 64) -> np.ndarray:
    ids = np.zeros(length, np.int64)  # the project's instruction encoding: UTF-8 bytes + 1, 0-padded
    data = np.frombuffer(text.encode(), np.uint8).astype(np.int64) + 1
    ids[: len(data)] = data
    return ids


def random_obs(b: int, image: int, state_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (b, image, image, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, state_dim)).astype(np.float32),
            "instruction": np.stack([encode(INSTRUCTIONS[i % len(INSTRUCTIONS)]) for i in range(b)])}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (kernels, allocator)
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def stats(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 5), "min": round(min(xs), 5), "max": round(max(xs), 5), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16, help="decisions per forward/backward step")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--lora_r", type=int, default=16)
    ap.add_argument("--device", default="cuda", help="cuda (the check); cpu only for a dry run with --preset tiny")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device — run it on a GPU machine (or --device cpu --preset tiny to dry-run)")
    cuda = args.device.startswith("cuda")

    import vla_rl.policy.factory as factory
    from vla_rl.policy import ActionTokenizer, build_policy

    factory.default_corpus = lambda template: [template.format(instruction=i) for i in INSTRUCTIONS]
    torch.backends.cuda.matmul.allow_tf32 = True
    at = ActionTokenizer((-1.0,) * 7, (1.0,) * 7)
    policy = build_policy(at, state_dim=8, image_size=(args.image, args.image), family="llava", preset=args.preset,
                          dtype="bfloat16", seed=0)
    n_params = sum(p.numel() for p in policy.model.parameters())
    policy.add_lora(r=args.lora_r, alpha=2 * args.lora_r)
    policy.to(args.device)
    lora = [p for n, p in policy.named_parameters() if p.requires_grad and "lora_" in n]
    for p in lora:  # LoRA in fp32 over the bf16 base (peft computes the adapter path in the adapter's dtype)
        p.data = p.data.float()
    policy.value_head.float()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    dtypes = {"base": sorted({str(p.dtype) for n, p in policy.model.named_parameters() if not p.requires_grad}),
              "lora": sorted({str(p.dtype) for p in lora}),
              "value_head": sorted({str(p.dtype) for p in policy.value_head.parameters()})}
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    obs = random_obs(args.batch, args.image, 8)
    with torch.no_grad():
        tokens = policy.act(obs).tokens

    def train_step():
        out = policy.evaluate(obs, tokens)
        loss = -out.logp.sum(-1).mean() + 0.5 * out.value.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_s = timed(train_step, args.repeats)
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in trainable if p.grad is not None)

    decode = {}
    for b in (1, 8, 32):
        o = random_obs(b, args.image, 8, seed=b)
        with torch.no_grad():
            xs = timed(lambda o=o: policy.act(o, greedy=True), args.repeats)
        decode[str(b)] = {"seconds": stats(xs), "decisions_per_s": round(b / statistics.median(xs), 2)}
    from experiments.bench_policy import naive_act

    one = random_obs(1, args.image, 8, seed=1)
    with torch.no_grad():
        naive = timed(lambda: naive_act(policy, one), max(3, args.repeats // 2))
        cached = policy.act(one, greedy=True).tokens
        same = bool(torch.equal(naive_act(policy, one).to(cached.device), cached))
    result = {
        "benchmark": "gpu", "command": " ".join(sys.argv), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "preset": args.preset, "image": args.image,
        "parameters_base": n_params, "parameters_trainable": sum(p.numel() for p in trainable),
        "lora_bytes_per_sync": sum(p.numel() * p.element_size() for p in lora),
        "full_state_bytes": sum(p.numel() * p.element_size() for p in policy.parameters()),
        "dtypes": dtypes, "action_tokens_per_decision": int(tokens.shape[1]),
        "train_step": {"batch": args.batch, "seconds": stats(step_s), "decisions_per_s": round(args.batch / statistics.median(step_s), 2),
                       "peak_gpu_gib": round(peak_train, 2), "grads_finite": grads_finite},
        "decode_greedy_kv_cache": decode,
        "decode_naive_batch1": {"seconds": stats(naive), "decisions_per_s": round(1 / statistics.median(naive), 2),
                                "kv_cache_speedup": round(statistics.median(naive) / decode["1"]["seconds"]["median"], 2),
                                "same_tokens_as_cached": same},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
