"""The RL-VLM-F two-stage preference prompt, answer parsing and the swap-consistency rule.

Stage 1 (two images + text) asks for an analysis; stage 2 (text only, after the analysis) asks for
one answer: 0 (image 1 better), 1 (image 2 better) or -1 (unsure / no difference). Temperature 0.
Anything that is not exactly one of those answers abstains and is counted as a parse failure.
"""

from __future__ import annotations

import hashlib
import re

ANALYSIS_PROMPT = (
    "Consider the following two images:\nImage 1:\n{image1}\nImage 2:\n{image2}\n"
    "1. What is shown in Image 1?\n2. What is shown in Image 2?\n"
    "3. The goal is to {goal}. Is there any difference between Image 1 and Image 2 in terms of achieving the goal?"
)
LABEL_PROMPT = (
    "Based on the text below to the questions:\n1. What is shown in Image 1?\n2. What is shown in Image 2?\n"
    "3. The goal is to {goal}. Is there any difference between Image 1 and Image 2 in terms of achieving the goal?\n"
    "{analysis}\n\n"
    "Is the goal better achieved in Image 1 or Image 2?\n"
    "Reply a single line of 0 if the goal is better achieved in Image 1, or 1 if it is better achieved in Image 2.\n"
    "Reply -1 if the text is unsure or there is no difference."
)
PROMPT_SHA256 = hashlib.sha256((ANALYSIS_PROMPT + "\x00" + LABEL_PROMPT).encode()).hexdigest()
_ANSWER = re.compile(r"^\s*[\"'`*(\[]*\s*(-1|0|1)\s*[\"'`*)\].]*\s*$")


def parse_answer(text: str | None) -> int | None:
    """0, 1 or -1 from a stage-2 reply whose first non-empty line is just that number; else None."""
    if not text:
        return None
    for line in text.strip().splitlines():
        if line.strip():
            m = _ANSWER.match(line)
            return int(m.group(1)) if m else None
    return None


def decide(answer: int | None, swapped_answer: int | None = None, swap_check: bool = False) -> tuple[str, float | None, bool | None]:
    """(status, label, swap_consistent) from the parsed answer(s).

    With the swap check the images were also shown in the other order: only 0 then 1 (or 1 then 0)
    is consistent; anything else abstains.
    """
    if answer is None or answer == -1:
        return "abstain", None, None
    if not swap_check:
        return "labeled", float(answer), None
    consistent = swapped_answer is not None and swapped_answer != -1 and swapped_answer == 1 - answer
    return ("labeled", float(answer), True) if consistent else ("abstain", None, False)
