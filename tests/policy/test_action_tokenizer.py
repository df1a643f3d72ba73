import json

import numpy as np
import pytest

from vla_rl.policy import ActionTokenizer, ActionTokenizerError


def test_round_trip_within_half_a_bin():
    rng = np.random.default_rng(0)
    tok = ActionTokenizer(low=(-1.0, -0.5, 0.0, -1.0), high=(1.0, 0.5, 2.0, 1.0))
    actions = rng.uniform(tok.low, tok.high, size=(1000, 4))
    back = tok.decode(tok.encode(actions))
    assert np.all(np.abs(back - actions) <= tok.bin_width / 2 + 1e-6)


def test_bins_and_token_ids_hand_computed():
    tok = ActionTokenizer(low=(-1.0,), high=(1.0,), n_bins=4, token_offset=100)
    # bins of width 0.5: [-1,-.5) [-.5,0) [0,.5) [.5,1]; out-of-range values go to the edge bins
    assert tok.encode(np.array([[-2.0], [-0.75], [-0.1], [0.0], [0.99], [1.0], [3.0]])).ravel().tolist() == [
        100, 100, 101, 102, 103, 103, 103]
    np.testing.assert_allclose(tok.decode(np.array([[100], [103]])).ravel(), [-0.75, 0.75])


def test_last_256_tokens_of_a_llama_vocabulary():
    vocab = 32000
    tok = ActionTokenizer(low=(-1.0,) * 2, high=(1.0,) * 2, token_offset=vocab - 256)
    ids = tok.encode(np.array([[-1.0, 1.0]]))
    assert ids.tolist() == [[vocab - 256, vocab - 1]]


def test_bounds_from_demo_quantiles_ignore_outliers():
    actions = np.concatenate([np.linspace(-0.5, 0.5, 1000)[:, None], [[50.0]]])
    tok = ActionTokenizer.from_actions(actions)
    assert tok.low[0] == pytest.approx(np.quantile(actions, 0.01)) and tok.high[0] < 1.0


def test_constant_dimension_gets_a_range():
    tok = ActionTokenizer.from_actions(np.array([[0.3, 1.0], [0.3, -1.0]]))
    assert tok.high[0] > tok.low[0]
    assert tok.decode(tok.encode(np.array([0.3, 0.0])))[0] == pytest.approx(0.3, abs=1e-5)


def test_save_load_exact(tmp_path):
    tok = ActionTokenizer.from_actions(np.random.default_rng(1).normal(size=(50, 3)), token_offset=7)
    tok.save(tmp_path / "t.json")
    assert ActionTokenizer.load(tmp_path / "t.json") == tok


def test_bad_inputs_are_named(tmp_path):
    tok = ActionTokenizer(low=(-1.0, -1.0), high=(1.0, 1.0))
    with pytest.raises(ActionTokenizerError, match="last axis must be 2"):
        tok.encode(np.zeros(3))
    with pytest.raises(ActionTokenizerError, match="NaN"):
        tok.encode(np.array([np.nan, 0.0]))
    with pytest.raises(ActionTokenizerError, match=r"values in \[0, 256\)"):
        tok.decode(np.array([300, 0]))
    with pytest.raises(ActionTokenizerError, match="not found"):
        ActionTokenizer.load(tmp_path / "missing.json")
    d = tok.to_dict()
    del d["high"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ActionTokenizerError, match=r"bad\.json: field 'high'"):
        ActionTokenizer.load(tmp_path / "bad.json")


def test_the_openvla_scheme_saves_as_version_2_and_uniform_files_stay_version_1(tmp_path):
    uniform = ActionTokenizer(low=(-1.0,), high=(1.0,), token_offset=3)
    assert uniform.to_dict() == {"format": "vla-rl-action-tokenizer", "version": 1, "n_bins": 256, "token_offset": 3,
                                 "low": [-1.0], "high": [1.0]}  # the bytes an older vla-rl wrote and reads
    ov = ActionTokenizer(low=(-0.5, 0.0, 0.0), high=(0.5, 0.0, 1.0), token_offset=31744, scheme="openvla",
                         mask=(True, True, False))  # q01 == q99 occurs in OpenVLA's statistics
    ov.save(tmp_path / "t.json")
    d = json.loads((tmp_path / "t.json").read_text())
    assert (d["version"], d["scheme"], d["mask"]) == (2, "openvla", [True, True, False])
    assert ActionTokenizer.load(tmp_path / "t.json") == ov == ActionTokenizer.from_dict(d)
    tokens = ov.encode(np.array([[0.0, 0.0, 0.5]]))
    np.testing.assert_allclose(ov.decode(tokens), [[0.0, 0.0, 0.5]], atol=ov.bin_width.max())  # within a bin
    assert ov.encode(np.array([[0.0, 7.0, 0.0]]))[0, 1] == ov.encode(np.array([[0.0, -7.0, 0.0]]))[0, 1]  # q01 == q99
    with pytest.raises(ActionTokenizerError, match="only the openvla scheme takes one"):
        ActionTokenizer(low=(-1.0,), high=(1.0,), mask=(True,))
    with pytest.raises(ActionTokenizerError, match="scheme='fast'"):
        ActionTokenizer(low=(-1.0,), high=(1.0,), scheme="fast")
