"""A small local text tokenizer for the default VLA, built with the `tokenizers` library.

No download: a byte-level BPE is trained on the prompt template and every registered task's
instructions (any UTF-8 text still encodes, byte by byte). The vocabulary ends with the 256
action-bin tokens, as OpenVLA reserves the last 256 ids of the Llama vocabulary, so
`token_offset = vocab_size - 256` for the action tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Specials first (ids 0..): the placeholders of the supported model families live here, so a
# processor's add_special_tokens() never appends after the action tokens.
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<state>", "<fake_token_around_image>",
                  "<global-img>", "<end_of_utterance>")
STATE_TOKEN = "<state>"


def action_token(i: int) -> str:
    return f"<act_{i:03d}>"


def build_text_tokenizer(corpus: Iterable[str], bpe_vocab_size: int = 512, n_action_bins: int = 256,
                         family_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus`, then append `family_tokens` and `n_action_bins` action tokens at the end.

    `family_tokens` are those a family's processor adds to any tokenizer it is given (`Family.processor_tokens`,
    e.g. PaliGemma's <locNNNN>/<segNNN>): held here, before the action tokens, the processor finds them present
    and adds nothing, so the action tokens stay the vocabulary's last ids.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus), trainer)
    tok.add_tokens(list(family_tokens))
    tok.add_special_tokens([action_token(i) for i in range(n_action_bins)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def default_corpus(prompt_template: str) -> list[str]:
    """The prompt filled with every instruction of the built-in families (the default VLA's whole language).

    Only the families every install has (`envs.CORE_FAMILIES`): an optional one (LIBERO's extra, an entry-point
    package) must not change how the same instruction tokenizes on another install — its instructions still
    tokenize, in smaller pieces."""
    from envs import CORE_FAMILIES, list_specs

    instructions = sorted({i for spec in list_specs() if spec.family in CORE_FAMILIES for i in spec.instructions})
    return [prompt_template.format(instruction=i) for i in instructions]
