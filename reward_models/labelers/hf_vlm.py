"""Labeler running a local Hugging Face VLM (any image-text-to-text checkpoint) with the RL-VLM-F prompt.

Stage 1 shows both frames and asks for an analysis; stage 2 (text only) asks for 0 / 1 / -1 given
that analysis. Greedy decoding (temperature 0). With `swap_check` the pair is asked again with the
frames swapped and only consistent answers are kept. Pairs go `batch_size` at a time through
left-padded generate() calls: stage 1, stage 2, then both stages again for the swapped re-asks.
Prompts use the processor's chat template when it has one, else the family's image placeholder
(LLaVA / Idefics3 style). Weights load from a
local directory or hub id; `trust_remote_code` only when the caller sets it.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from reward_models.labelers.base import LabelResult
from reward_models.labelers.openai_http import frame_of
from reward_models.labelers.prompts import (
    ANALYSIS_PROMPT,
    LABEL_PROMPT,
    PROMPT_SHA256,
    decide,
    parse_answer,
)
from reward_models.pairs import Pair

TRUNCATED = "truncated"  # the parsed answer of a pair whose reply hit max_new_tokens


class HFVLMLabeler:
    def __init__(self, model: str, trust_remote_code: bool = False, max_new_tokens: int = 512, swap_check: bool = True,
                 device: str = "cpu", dtype: str = "float32", batch_size: int = 8, show_progress: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        from vla_rl.base.hub import ModelSourceError, check_model_source

        self.model_id = model
        self.name = f"hf:{model}"
        source = check_model_source(model, "vlm_model")
        try:
            self.processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            self.model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtypes[dtype],
                                                                     trust_remote_code=trust_remote_code).to(device).eval()
        except (OSError, ValueError) as e:
            raise ModelSourceError(f"vlm_model={model!r}: cannot load an image-text-to-text model and its processor "
                                   f"({' '.join(str(e).split())[:300]})") from None
        self.max_new_tokens, self.swap_check, self.device = max_new_tokens, swap_check, device
        self.batch_size, self.show_progress = batch_size, show_progress
        self.placeholder = getattr(self.processor, "image_token", None) or "<image>"
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only batches: every prompt ends where generation starts
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

    def _prompt(self, text: str, n_images: int) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return self.placeholder * n_images + text

    @torch.no_grad()
    def _generate(self, texts: list[str], images: list[list] | None) -> tuple[list[str], list[bool]]:
        """Greedy replies to a left-padded batch of prompts (each with its own images, or none), and for each
        whether it was cut at max_new_tokens (it ran to the limit without an end-of-sequence token)."""
        prompts = [self._prompt(t, len(images[i]) if images else 0) for i, t in enumerate(texts)]
        tok = self.processor.tokenizer
        if images:
            nested = type(self.processor).__name__.startswith(("Idefics", "SmolVLM"))
            flat = images if nested else [im for per_prompt in images for im in per_prompt]
            inputs = self.processor(text=prompts, images=flat, padding=True, return_tensors="pt")
        else:
            inputs = tok(prompts, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=tok.pad_token_id)
        start = inputs["input_ids"].shape[1]
        eos = self.model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id, tok.pad_token_id}
        gens = [row[start:] for row in out]
        cut = [len(g) >= self.max_new_tokens and int(g[-1]) not in stop for g in gens]
        return [tok.decode(g, skip_special_tokens=True) for g in gens], cut

    def _ask(self, goals: list[str], image_pairs: list[tuple]) -> tuple[list, list[list[str]]]:
        """Both RL-VLM-F stages for a batch: parsed answers (TRUNCATED where either reply was cut) and
        [analysis, answer] texts per pair."""
        analyses, cut1 = self._generate([ANALYSIS_PROMPT.format(image1="", image2="", goal=g) for g in goals],
                                        [list(p) for p in image_pairs])
        answers, cut2 = self._generate([LABEL_PROMPT.format(goal=g, analysis=a) for g, a in zip(goals, analyses, strict=True)],
                                       None)
        parsed = [TRUNCATED if c1 or c2 else parse_answer(a) for a, c1, c2 in zip(answers, cut1, cut2, strict=True)]
        return parsed, [list(t) for t in zip(analyses, answers, strict=True)]

    def label(self, pairs: list[Pair]) -> list[LabelResult]:
        results = []
        bar = tqdm(total=len(pairs), desc="vlm label", unit="pair", disable=not self.show_progress, dynamic_ncols=True)
        for s in range(0, len(pairs), self.batch_size):
            chunk = pairs[s:s + self.batch_size]
            goals = [p.instruction_text for p in chunk]
            frames = [(frame_of(p.first), frame_of(p.second)) for p in chunk]
            answers, raws = self._ask(goals, frames)
            swapped, raws_swapped = [None] * len(chunk), [None] * len(chunk)
            ask_again = [i for i, a in enumerate(answers) if a in (0, 1)] if self.swap_check else []
            if ask_again:
                again, again_raw = self._ask([goals[i] for i in ask_again], [frames[i][::-1] for i in ask_again])
                for i, a, r in zip(ask_again, again, again_raw, strict=True):
                    swapped[i], raws_swapped[i] = a, r
            for i in range(len(chunk)):
                if TRUNCATED in (answers[i], swapped[i]):  # incomplete reasoning never becomes a label
                    results.append(LabelResult("unlabeled", None, self.name, {
                        "model": self.model_id, "prompt_sha256": PROMPT_SHA256, "raw": raws[i],
                        "error": f"reply cut at max_tokens={self.max_new_tokens}: raise --max_tokens and rerun "
                                 "with --retry_unlabeled true"}))
                    continue
                status, label, consistent = decide(answers[i], swapped[i], self.swap_check)
                prov = {"model": self.model_id, "prompt_sha256": PROMPT_SHA256, "raw": raws[i],
                        "parsed": answers[i], "parse_failure": answers[i] is None}
                if raws_swapped[i] is not None:
                    prov["raw_swapped"] = raws_swapped[i]
                if self.swap_check:
                    prov["swap_consistent"] = consistent
                results.append(LabelResult(status, label, self.name, prov))
            bar.update(len(chunk))
        bar.close()
        return results
