"""Labeler over an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, hosted APIs).

Each pair costs two calls (analysis, then answer; four with the swap check), sent `concurrency` at a
time with httpx. Timeouts, connection errors, 429 and 5xx are retried with exponential backoff and
jitter (tenacity). Answers are cached on disk under a key of (image hashes, prompt, model, stage),
so a rerun or a retry never pays twice. A pair whose calls still fail is returned "unlabeled"
(never dropped) with the cause in its provenance — the server's own reason for an HTTP error (its
JSON `error.message` or body), or "reply cut at max_tokens" when the server stopped at the token
limit (`finish_reason` "length"; such a reply is neither used nor cached) — so the caller retries it
later. The API key comes from an environment variable and is never logged or cached.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from reward_models.labelers.base import LabelResult
from reward_models.labelers.prompts import (
    ANALYSIS_PROMPT,
    LABEL_PROMPT,
    PROMPT_SHA256,
    decide,
    parse_answer,
)
from reward_models.pairs import Pair
from vla_rl.base.atomic_io import atomic_write_json

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class ReplyTruncated(RuntimeError):
    """The server stopped at max_tokens: the reply is incomplete and must not become a label."""


def server_reason(response: httpx.Response) -> str:
    """The server's own explanation of an error status: JSON `error.message` / `error` / `detail`, else the body."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return " ".join(str(err).split())[:300]
    return " ".join(json.dumps(body).split())[:300]


def _retryable(e: BaseException) -> bool:
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code in RETRY_STATUS
    return isinstance(e, (httpx.TimeoutException, httpx.TransportError))


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def frame_of(segment: np.ndarray) -> np.ndarray:
    """The frame shown to the VLM: the segment's last (RL-VLM-F compares single states)."""
    return segment[-1]


class OpenAILabeler:
    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, timeout: float = 60.0, max_attempts: int = 5, swap_check: bool = True,
                 cache_dir: str | Path | None = None, max_tokens: int = 512, backoff_max: float = 30.0):
        self.model, self.base_url = model, base_url.rstrip("/")
        self.name = f"openai:{model}"
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.concurrency, self.swap_check, self.max_tokens = concurrency, swap_check, max_tokens
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.calls = 0  # HTTP requests actually sent (cache hits excluded)
        self._post = retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(max_attempts),
                           wait=wait_exponential_jitter(multiplier=0.5, max=backoff_max), reraise=True)(self._post_once)

    def close(self) -> None:
        self.client.close()

    # --- one chat call (cached) -------------------------------------------------------------
    def _post_once(self, payload: dict) -> str:
        self.calls += 1
        r = self.client.post(f"{self.base_url}/chat/completions", json=payload)
        if r.is_error:  # keep the server's reason: "400 Bad Request" alone does not say what to fix
            reason = server_reason(r)
            raise httpx.HTTPStatusError(f"HTTP {r.status_code} {r.reason_phrase} from {r.request.url}"
                                        + (f": {reason}" if reason else ""), request=r.request, response=r)
        try:
            choice = r.json()["choices"][0]
            content = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ValueError(f"malformed chat-completions response: {r.text[:200]!r}") from e
        if choice.get("finish_reason") == "length":
            raise ReplyTruncated(f"reply cut at max_tokens={payload['max_tokens']} (finish_reason 'length'): "
                                 "raise --max_tokens and rerun with --retry_unlabeled true")
        return content

    def _chat(self, key: str, messages: list) -> str:
        path = self.cache_dir / f"{key}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            return json.loads(path.read_text())["content"]
        content = self._post({"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens})
        if path is not None:
            atomic_write_json(path, {"model": self.model, "content": content})
        return content

    def _ask(self, goal: str, img1: np.ndarray, img2: np.ndarray) -> tuple[int | None, list[str]]:
        h = hashlib.sha256()
        for a in (img1, img2):
            h.update(np.ascontiguousarray(a).tobytes())
        base = hashlib.sha256(f"{h.hexdigest()}|{PROMPT_SHA256}|{self.model}|{goal}".encode()).hexdigest()
        text = ANALYSIS_PROMPT.format(image1="", image2="", goal=goal)
        user = {"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": png_data_url(img1)}},
            {"type": "image_url", "image_url": {"url": png_data_url(img2)}}]}
        analysis = self._chat(base + "-analysis", [user])
        answer = self._chat(base + "-label", [{"role": "user", "content": LABEL_PROMPT.format(goal=goal, analysis=analysis)}])
        return parse_answer(answer), [analysis, answer]

    def _label_one(self, pair: Pair) -> LabelResult:
        a, b = frame_of(pair.first), frame_of(pair.second)
        prov = {"model": self.model, "base_url": self.base_url, "prompt_sha256": PROMPT_SHA256}
        try:
            ans, texts = self._ask(pair.instruction_text, a, b)
            prov["raw"] = texts
            swapped = None
            if self.swap_check and ans in (0, 1):
                swapped, swapped_texts = self._ask(pair.instruction_text, b, a)
                prov["raw_swapped"] = swapped_texts
        except Exception as e:  # noqa: BLE001 - any failure keeps the pair unlabeled for a retry
            prov["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
            return LabelResult("unlabeled", None, self.name, prov)
        status, label, consistent = decide(ans, swapped, self.swap_check)
        prov["parsed"] = ans
        prov["parse_failure"] = ans is None
        if self.swap_check:
            prov["swap_consistent"] = consistent
        return LabelResult(status, label, self.name, prov)

    def label(self, pairs: list[Pair]) -> list[LabelResult]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._label_one, pairs))
