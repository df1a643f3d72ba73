"""The VLA policy: action tokenizer (built), VLAPolicy over HF image-text-to-text models (planned)."""

from vla_rl.policy.action_tokenizer import ActionTokenizer, ActionTokenizerError

__all__ = ["ActionTokenizer", "ActionTokenizerError"]
