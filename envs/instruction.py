"""Fixed-length integer encoding of language instructions.

RLlib (and any batched tensor pipeline) cannot carry strings, so the observation holds the
instruction as int64 ids. We use UTF-8 bytes shifted by one (0 is padding): the encoding is
independent of any model's tokenizer and exactly reversible, so a policy decodes the ids back to
text and applies its own tokenizer.
"""

from __future__ import annotations

import numpy as np

from vla_rl.base.errors import ConfigError

PAD_ID = 0
VOCAB_SIZE = 257  # 256 byte values + padding


def encode_instruction(text: str, length: int) -> np.ndarray:
    """Encode `text` as `length` int64 ids (UTF-8 byte + 1, right-padded with 0)."""
    data = text.encode("utf-8")
    if len(data) > length:
        raise ConfigError(
            f"instruction {text!r} is {len(data)} bytes long but env_options.instruction_length is "
            f"{length}; raise instruction_length to at least {len(data)}"
        )
    ids = np.zeros(length, dtype=np.int64)
    ids[: len(data)] = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + 1
    return ids


def decode_instruction(ids: np.ndarray) -> str:
    """Inverse of `encode_instruction`; accepts any integer array of shape (L,)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"instruction ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
        raise ValueError(f"instruction ids must lie in [0, {VOCAB_SIZE}), got {ids.min()}..{ids.max()}")
    data = bytes(int(i) - 1 for i in ids if i != PAD_ID)
    return data.decode("utf-8")
