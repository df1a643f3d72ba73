"""Labeler running a local Hugging Face VLM (any image-text-to-text checkpoint) with the RL-VLM-F prompt.

Stage 1 shows both frames and asks for an analysis; stage 2 (text only) asks for 0 / 1 / -1 given
that analysis. Greedy decoding (temperature 0). With `swap_check` the pair is asked again with the
frames swapped and only consistent answers are kept. Prompts use the processor's chat template
when it has one, else the family's image placeholder (LLaVA / Idefics3 style). Weights load from a
local directory or hub id; `trust_remote_code` only when the caller sets it.
"""

from __future__ import annotations

import torch

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


class HFVLMLabeler:
    def __init__(self, model: str, trust_remote_code: bool = False, max_new_tokens: int = 256, swap_check: bool = True,
                 device: str = "cpu", dtype: str = "float32"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        self.model_id = model
        self.name = f"hf:{model}"
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtypes[dtype],
                                                                 trust_remote_code=trust_remote_code).to(device).eval()
        self.max_new_tokens, self.swap_check, self.device = max_new_tokens, swap_check, device
        self.placeholder = getattr(self.processor, "image_token", None) or "<image>"

    def _prompt(self, text: str, n_images: int) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        return self.placeholder * n_images + text

    @torch.no_grad()
    def _generate(self, text: str, images: list | None) -> str:
        prompt = self._prompt(text, len(images) if images else 0)
        if images:
            nested = type(self.processor).__name__.startswith(("Idefics", "SmolVLM"))
            inputs = self.processor(text=[prompt], images=[images] if nested else images, return_tensors="pt")
        else:
            inputs = self.processor.tokenizer([prompt], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _ask(self, goal: str, img1, img2) -> tuple[int | None, list[str]]:
        analysis = self._generate(ANALYSIS_PROMPT.format(image1="", image2="", goal=goal), [img1, img2])
        answer = self._generate(LABEL_PROMPT.format(goal=goal, analysis=analysis), None)
        return parse_answer(answer), [analysis, answer]

    def label(self, pairs: list[Pair]) -> list[LabelResult]:
        results = []
        for pair in pairs:
            a, b = frame_of(pair.first), frame_of(pair.second)
            prov = {"model": self.model_id, "prompt_sha256": PROMPT_SHA256}
            ans, prov["raw"] = self._ask(pair.instruction_text, a, b)
            swapped = None
            if self.swap_check and ans in (0, 1):
                swapped, prov["raw_swapped"] = self._ask(pair.instruction_text, b, a)
            status, label, consistent = decide(ans, swapped, self.swap_check)
            prov.update(parsed=ans, parse_failure=ans is None)
            if self.swap_check:
                prov["swap_consistent"] = consistent
            results.append(LabelResult(status, label, self.name, prov))
        return results
