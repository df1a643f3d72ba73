import pytest

from reward_models.labelers.prompts import decide, parse_answer


@pytest.mark.parametrize("text,expected", [("0", 0), ("1\n", 1), (" -1 ", -1), ("**1**", 1), ("\n\n0.", 0),
                                           ("Image 1", None), ("2", None), ("", None), (None, None), ("10", None),
                                           ("1 because the drawer is open", None)])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_decide_with_and_without_swap_check():
    assert decide(1) == ("labeled", 1.0, None)
    assert decide(-1) == ("abstain", None, None)
    assert decide(None) == ("abstain", None, None)
    assert decide(0, 1, swap_check=True) == ("labeled", 0.0, True)
    assert decide(0, 0, swap_check=True) == ("abstain", None, False)  # position bias: inconsistent
    assert decide(1, -1, swap_check=True) == ("abstain", None, False)
