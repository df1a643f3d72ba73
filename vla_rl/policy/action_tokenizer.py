"""OpenVLA-style action tokenizer: 256 uniform bins per dimension, mapped to reserved vocab tokens.

Bounds per dimension come from the demonstrations (quantiles q01/q99, as OpenVLA does, so rare
outliers do not stretch the bins). Values outside the bounds fall into the edge bins; decoding
returns bin centres, so an in-range value round-trips within half a bin width. Bin b of any
dimension is token `token_offset + b`; for Llama-vocabulary VLAs the offset is `vocab_size - 256`
(the last 256 ids of the base vocabulary, which OpenVLA overwrites; `policy_from_hf` picks ids that no special
or added token holds, `factory.action_token_offset`). Saved as JSON next to the policy weights.

`scheme="openvla"` reproduces an OpenVLA checkpoint's own tokens instead (prismatic/vla/action_tokenizer.py and
`predict_action`): a masked dimension is normalised to [-1, 1] with low=q01 / high=q99, every dimension is clipped to
[-1, 1] and digitised on `linspace(-1, 1, n_bins)`, and the token is `token_offset + n_bins - digitize` — so the highest
id is the lowest action. Decoding gives the centres of the n_bins - 1 intervals (the lowest two ids share the top one)
and un-normalises masked dimensions; unmasked ones (OpenVLA's gripper) stay as decoded. Such a file is version 2 (an
older vla-rl refuses it instead of decoding it with uniform bins); uniform files stay version 1, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_rl.base.atomic_io import atomic_write_json
from vla_rl.base.errors import VLARLError

FORMAT = "vla-rl-action-tokenizer"
VERSION = 2  # what this code reads; a file records the lowest version that can read it (`to_dict`)
MIN_WIDTH = 1e-6  # a constant demo dimension still gets a non-empty range
SCHEMES = ("uniform", "openvla")


class ActionTokenizerError(VLARLError):
    """Bad statistics or actions; the message names the file or argument and the field."""


@dataclass(frozen=True)
class ActionTokenizer:
    low: tuple[float, ...]
    high: tuple[float, ...]
    n_bins: int = 256
    token_offset: int = 0
    scheme: str = "uniform"  # or "openvla": OpenVLA's own token <-> action map (module docstring)
    mask: tuple[bool, ...] | None = None  # openvla: which dimensions low/high un-normalise (None: all)

    def __post_init__(self):
        low, high = np.asarray(self.low, np.float64), np.asarray(self.high, np.float64)
        if self.scheme not in SCHEMES:
            raise ActionTokenizerError(f"scheme={self.scheme!r}; choose one of {SCHEMES}")
        if low.ndim != 1 or low.shape != high.shape or low.size == 0:
            raise ActionTokenizerError(f"low/high must be equal-length 1-D, got {low.shape} and {high.shape}")
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ActionTokenizerError(f"low/high must be finite, got low={self.low} high={self.high}")
        if self.scheme == "uniform" and np.any(high - low < MIN_WIDTH):
            raise ActionTokenizerError(f"high must exceed low in every dimension, got low={self.low} high={self.high}")
        if self.scheme == "openvla" and np.any(high < low):  # q01 == q99 happens in OpenVLA's statistics
            raise ActionTokenizerError(f"high must be >= low in every dimension, got low={self.low} high={self.high}")
        if self.mask is not None and (self.scheme != "openvla" or len(self.mask) != low.size
                                      or not all(isinstance(m, bool) for m in self.mask)):
            raise ActionTokenizerError(f"mask={self.mask!r}: only the openvla scheme takes one, {low.size} booleans")
        if self.scheme == "openvla" and self.mask is None:  # one spelling of "every dimension", so equality holds
            object.__setattr__(self, "mask", (True,) * low.size)
        if not (3 if self.scheme == "openvla" else 2) <= self.n_bins <= 65536:
            raise ActionTokenizerError(f"n_bins={self.n_bins} is out of range for scheme {self.scheme!r}")
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
        """Width of one bin in action units (openvla: of one of its n_bins - 1 intervals, masked dimensions)."""
        return (np.asarray(self.high) - np.asarray(self.low)) / (self.n_bins - (self.scheme == "openvla"))

    def _mask(self) -> np.ndarray:
        return np.asarray(self.mask, bool)

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
        low, high = np.asarray(self.low), np.asarray(self.high)
        if self.scheme == "uniform":
            scaled = (actions - low) / self.bin_width
            return np.clip(np.floor(scaled), 0, self.n_bins - 1).astype(np.int64)
        # OpenVLA: BOUNDS_Q99 normalisation (a dimension with q01 == q99 becomes 0, as OpenVLA zeroes constant ones)
        normed = np.where(high > low, 2 * (actions - low) / (high - low + 1e-8) - 1, 0.0)
        value = np.clip(np.where(self._mask(), normed, actions), -1.0, 1.0)
        return (self.n_bins - np.digitize(value, np.linspace(-1.0, 1.0, self.n_bins))).astype(np.int64)

    def from_bins(self, bins: np.ndarray) -> np.ndarray:
        """int bins `(..., D)` -> bin-centre actions (float32)."""
        bins = np.asarray(bins)
        if bins.shape[-1:] != (self.action_dim,) or bins.min(initial=0) < 0 or bins.max(initial=0) >= self.n_bins:
            raise ActionTokenizerError(f"bins must have last axis {self.action_dim} and values in [0, {self.n_bins})")
        low, high = np.asarray(self.low), np.asarray(self.high)
        if self.scheme == "uniform":
            return (low + (bins + 0.5) * self.bin_width).astype(np.float32)
        edges = np.linspace(-1.0, 1.0, self.n_bins)
        normed = ((edges[:-1] + edges[1:]) / 2.0)[np.clip(self.n_bins - 1 - bins, 0, self.n_bins - 2)]
        return np.where(self._mask(), 0.5 * (normed + 1) * (high - low) + low, normed).astype(np.float32)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Actions `(..., D)` -> vocabulary token ids `(..., D)`."""
        return self.to_bins(actions) + self.token_offset

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids `(..., D)` -> bin-centre actions; ids outside the action range raise."""
        return self.from_bins(np.asarray(tokens) - self.token_offset)

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "version": 1, "n_bins": self.n_bins, "token_offset": self.token_offset,
             "low": list(self.low), "high": list(self.high)}
        if self.scheme != "uniform":
            d.update(version=2, scheme=self.scheme, mask=list(self.mask))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActionTokenizer:
        """The tokenizer `to_dict` describes (a version-1 dict is the uniform scheme)."""
        mask = d.get("mask")
        return cls(tuple(d["low"]), tuple(d["high"]), int(d["n_bins"]), int(d["token_offset"]),
                   d.get("scheme", "uniform"), None if mask is None else tuple(mask))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ActionTokenizer:
        from vla_rl.base.formats import read_versioned_json

        path = Path(path)
        d = read_versioned_json(path, FORMAT, VERSION, ActionTokenizerError,
                                "action statistics (the policy needs its action_tokenizer.json)",
                                {"n_bins": int, "token_offset": int, "low": list, "high": list})
        if not isinstance(d.get("scheme", "uniform"), str) or not isinstance(d.get("mask", []), list | type(None)):
            raise ActionTokenizerError(f"{path}: field 'scheme' must be a string and 'mask' a list of booleans")
        try:
            return cls.from_dict(d)
        except ActionTokenizerError as e:
            raise ActionTokenizerError(f"{path}: {e}") from None
