import numpy as np
import pytest

from envs.instruction import decode_instruction, encode_instruction


def test_round_trip_exact_including_utf8():
    for text in ["open the drawer", "touch the blue block", "déplacer le bloc", ""]:
        ids = encode_instruction(text, 32)
        assert ids.dtype == np.int64 and ids.shape == (32,)
        assert decode_instruction(ids) == text


def test_padding_is_zero_and_ids_shifted():
    ids = encode_instruction("ab", 5)
    assert ids.tolist() == [ord("a") + 1, ord("b") + 1, 0, 0, 0]


def test_too_long_names_the_option():
    with pytest.raises(ValueError, match="instruction_length"):
        encode_instruction("x" * 20, 8)


def test_bad_ids_rejected():
    with pytest.raises(ValueError, match="must lie in"):
        decode_instruction(np.array([300]))
