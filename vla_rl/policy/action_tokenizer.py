"""OpenVLA-style action tokenizer: 256 uniform bins per dimension, mapped to reserved vocab tokens.

Bounds per dimension come from the demonstrations (quantiles q01/q99, as OpenVLA does, so rare
outliers do not stretch the bins). Values outside the bounds fall into the edge bins; decoding
returns bin centres, so an in-range value round-trips within half a bin width. Bin b of any
dimension is token `token_offset + b`; for Llama-vocabulary VLAs the offset is `vocab_size - 256`
(the last 256 ids of the base vocabulary, which OpenVLA overwrites; `policy_from_hf` picks ids that no special
or added token holds, `factory.action_token_offset`). Saved as JSON next to the policy weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_rl.base.atomic_io import atomic_write_json
from vla_rl.base.errors import VLARLError

FORMAT = "vla-rl-action-tokenizer"
VERSION = 1
MIN_WIDTH = 1e-6  # a constant demo dimension still gets a non-empty range


class ActionTokenizerError(VLARLError):
    """Bad statistics or actions; the message names the file or argument and the field."""


@dataclass(frozen=True)
class ActionTokenizer:
    low: tuple[float, ...]
    high: tuple[float, ...]
    n_bins: int = 256
    token_offset: int = 0

    def __post_init__(self):
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if low.ndim != 1 or low.shape != high.shape or low.size == 0:
            raise ActionTokenizerError(f"low/high must be equal-length 1-D, got {low.shape} and {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ActionTokenizerError(f"low/high must be finite, got low={self.low} high={self.high}")
        if np.any(high - low < MIN_WIDTH):
            raise ActionTokenizerError(f"high must exceed low in every dimension, got low={self.low} high={self.high}")
        if not 2 <= self.n_bins <= 65536:
            raise ActionTokenizerError(f"n_bins={self.n_bins} is out of range [2, 65536]")
        if self.token_offset < 0:
            raise ActionTokenizerError(f"token_offset={self.token_offset} must be >= 0")

    @classmethod
    def from_actions(cls, actions: np.ndarray, quantiles: tuple[float, float] = (0.01, 0.99), n_bins: int = 256,
                     token_offset: int = 0) -> ActionTokenizer:
        """Bounds = per-dimension quantiles of the demonstration actions `(N, D)`."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ActionTokenizerError(f"actions must be a non-empty (N, D) array, got shape {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ActionTokenizerError("actions contain NaN or inf")
        low, high = np.quantile(actions, quantiles[0], axis=0), np.quantile(actions, quantiles[1], axis=0)
        centre, half = (low + high) / 2, np.maximum((high - low) / 2, MIN_WIDTH)
        return cls(tuple((centre - half).tolist()), tuple((centre + half).tolist()), n_bins, token_offset)

    @property
    def action_dim(self) -> int:
        return len(self.low)

    @property
    def bin_width(self) -> np.ndarray:
        return (np.asarray(self.high) - np.asarray(self.low)) / self.n_bins

    def _check(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape[-1:] != (self.action_dim,):
            raise ActionTokenizerError(f"actions have shape {actions.shape}; the last axis must be {self.action_dim}")
        if not np.all(np.isfinite(actions)):
            raise ActionTokenizerError("actions contain NaN or inf")
        return actions

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        """`(..., D)` continuous actions -> int64 bins in [0, n_bins)."""
        actions = self._check(actions)
        scaled = (actions - np.asarray(self.low)) / self.bin_width
        return np.clip(np.floor(scaled), 0, self.n_bins - 1).astype(np.int64)

    def from_bins(self, bins: np.ndarray) -> np.ndarray:
        """int bins `(..., D)` -> bin-centre actions (float32)."""
        bins = np.asarray(bins)
        if bins.shape[-1:] != (self.action_dim,) or bins.min(initial=0) < 0 or bins.max(initial=0) >= self.n_bins:
            raise ActionTokenizerError(f"bins must have last axis {self.action_dim} and values in [0, {self.n_bins})")
        return (np.asarray(self.low) + (bins + 0.5) * self.bin_width).astype(np.float32)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Actions `(..., D)` -> vocabulary token ids `(..., D)`."""
        return self.to_bins(actions) + self.token_offset

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids `(..., D)` -> bin-centre actions; ids outside the action range raise."""
        return self.from_bins(np.asarray(tokens) - self.token_offset)

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "n_bins": self.n_bins, "token_offset": self.token_offset,
                "low": list(self.low), "high": list(self.high)}

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ActionTokenizer:
        from vla_rl.base.formats import read_versioned_json

        path = Path(path)
        d = read_versioned_json(path, FORMAT, VERSION, ActionTokenizerError,
                                "action statistics (the policy needs its action_tokenizer.json)",
                                {"n_bins": int, "token_offset": int, "low": list, "high": list})
        try:
            return cls(tuple(d["low"]), tuple(d["high"]), d["n_bins"], d["token_offset"])
        except ActionTokenizerError as e:
            raise ActionTokenizerError(f"{path}: {e}") from None
