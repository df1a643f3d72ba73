"""The online preference loop on hand-built episodes whose frames' brightness is their progress (no Ray, no env)."""

import dataclasses

import numpy as np
import pytest
import torch

from envs.instruction import encode_instruction
from reward_models.labeler_actor import LocalLabelers
from reward_models.online import PreferenceLoop, PreferenceOptions
from reward_models.pairs import PairDataset
from reward_models.scoring import score_frames, spearman_vs_progress
from vla_rl.rl.episodes import episode_frames


class FakeEpisode:
    """What the loop reads of an RLlib SingleAgentEpisode: observations (dict of arrays) and infos."""

    def __init__(self, progress, text="open the drawer"):
        self.progress = np.asarray(progress, dtype=np.float64)
        n = len(self.progress)
        self.image = np.repeat((self.progress * 255).astype(np.uint8)[:, None, None, None], 64, 1).repeat(64, 2).repeat(3, 3)
        self.instruction = np.repeat(encode_instruction(text, 32)[None], n, 0)

    def get_observations(self):
        return {"image": self.image, "instruction": self.instruction}

    def get_infos(self):
        return [{"progress": float(p), "success": p >= 1.0} for p in self.progress]


def batch(seed, episodes=4, length=21):
    rng = np.random.default_rng(seed)
    return [FakeEpisode(np.clip(np.cumsum(rng.uniform(0, 0.1, length)), 0, 1)) for _ in range(episodes)]


def frames(seed, iteration=None, **kw):
    """A batch as the training step hands it to the loop: converted once, named after its iteration."""
    return episode_frames(batch(seed, **kw), f"rollout:iteration {seed if iteration is None else iteration}")


class CountingLabelers(LocalLabelers):
    def __init__(self, *args, fail_first=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked, self.fail_first = [], fail_first

    def submit(self, pairs, seed):
        self.asked += [p.id for p in pairs]
        if self.fail_first > 0:
            self.fail_first -= 1
            return ("failed", "ConnectError: endpoint down")
        return super().submit(pairs, seed)


OPTS = PreferenceOptions(queries_per_round=12, max_queries=30, epochs=15, patience=15, ensemble_size=2)


def make_loop(tmp_path, opts=OPTS, state=None, model=None, **kw):
    labelers = CountingLabelers(opts, tmp_path / "cache", **kw)
    return PreferenceLoop(opts, tmp_path / "pairs", seed=3, labelers=labelers, state=state, model=model), labelers


def test_rollout_frames_keep_images_instruction_and_progress():
    eps = episode_frames(batch(0, episodes=2, length=5), "rollout:iteration 1")
    assert len(eps.image) == 2 and eps.image[0].shape == (5, 64, 64, 3) and eps.text == ["open the drawer"] * 2
    assert np.allclose(eps.progress[0], batch(0, episodes=2, length=5)[0].progress)


def test_first_round_is_awaited_then_answers_lag_one_iteration(tmp_path):
    loop, labelers = make_loop(tmp_path)
    m1, model1 = loop.step(1, frames(1))
    # Iteration 1: no model yet, so its answers are consumed at once and the first model is trained.
    assert model1 is not None and m1["reward_model/version"] == 1 and m1["labels/requested"] == 12
    assert m1["labels/answered"] == 12 and m1["labels/pending"] == 0 and m1["labels/teacher_accuracy"] == 1.0
    ds = PairDataset(tmp_path / "pairs")
    assert len(ds) == 12 and all(e["label_source"] == "scripted:oracle" for e in ds.entries)
    assert all(e["provenance"]["asked_at_iteration"] == 1 for e in ds.entries)
    # Iteration 2 asks 12 more; they are answered but consumed only at iteration 3 (label_lag 1).
    m2, model2 = loop.step(2, frames(2))
    assert model2 is None and m2["reward_model/version"] == 1 and m2["labels/pending"] == 12
    assert m2["labels/requested"] == 24 and len(PairDataset(tmp_path / "pairs")) == 24
    m3, model3 = loop.step(3, frames(3))
    assert model3 is not None and m3["reward_model/version"] == 2 and m3["labels/answered"] >= 24
    # The budget: 30 queries in all, the last round asks only 6.
    assert m3["labels/requested"] == 30
    m4, _ = loop.step(4, frames(4))
    assert m4["labels/requested"] == 30 and len(labelers.asked) == 30


def test_the_reward_model_learns_the_teachers_order(tmp_path):
    loop, _ = make_loop(tmp_path, dataclasses.replace(OPTS, max_queries=60, queries_per_round=30))
    for it in range(1, 4):
        loop.step(it, frames(it))
    held_out = frames(4)
    scores = score_frames(loop.model, held_out)  # one pass: what the RL side turns into rewards and audits
    assert [len(s) for s in scores] == [len(im) for im in held_out.image]
    assert spearman_vs_progress(scores, held_out) > 0.8
    r = loop.model.reward({"image": batch(9)[0].image, "instruction": batch(9)[0].instruction})
    assert r[-1] > r[0]  # the end of an episode (progress ~1) scores above its start (progress 0)


def test_failed_calls_stay_unlabeled_and_are_asked_again(tmp_path):
    loop, labelers = make_loop(tmp_path, fail_first=1)
    m1, model = loop.step(1, frames(1))
    assert model is None and m1["reward_model/version"] == 0 and m1["labels/pending"] == 12
    assert m1["labels/failed_rounds"] == 1 and PairDataset(tmp_path / "pairs").counts()["unlabeled"] == 12
    m2, model = loop.step(2, frames(2))  # no model yet: lag 0 again; the 12 failed pairs ride along with 12 new
    assert model is not None and m2["labels/pending"] == 0 and m2["labels/answered"] == 24
    assert len(labelers.asked) == 12 + 24 and PairDataset(tmp_path / "pairs").counts()["unlabeled"] == 0


def test_resume_asks_no_query_twice_and_ends_where_the_uninterrupted_run_ends(tmp_path):
    a, _ = make_loop(tmp_path / "a")
    for it in (1, 2, 3):
        metrics_a, _ = a.step(it, frames(it))
    b, _ = make_loop(tmp_path / "b")
    b.step(1, frames(1))
    b.step(2, frames(2))
    state = b.state_dict()  # the checkpoint after iteration 2 (one round pending)
    b.save(tmp_path / "ckpt")
    b.step(3, frames(3))  # ... the run goes on, then crashes; resume from the checkpoint:
    loaded_state, model = PreferenceLoop.load_state(tmp_path / "ckpt")
    assert loaded_state == state
    c, labelers = make_loop(tmp_path / "b", state=loaded_state, model=model)
    metrics_c, _ = c.step(3, frames(3))
    assert labelers.asked == []  # every query of iteration 3 already has its answer in the dataset
    assert metrics_c["labels/from_dataset"] == 6 + 12
    for key in ("labels/requested", "labels/valid", "reward_model/version"):
        assert metrics_c[key] == metrics_a[key]
    assert c.state.used == a.state.used
    for p, q in zip(c.model.state_dict().values(), a.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_options_are_validated_by_name():
    from vla_rl.base.errors import ConfigError

    with pytest.raises(ConfigError, match="preference.selection"):
        dataclasses.replace(OPTS, selection="random").validate()
    with pytest.raises(ConfigError, match="vlm_model"):
        dataclasses.replace(OPTS, labeler="openai").validate()


def test_adopted_demo_pairs_train_the_first_model_with_the_first_round(tmp_path):
    first, _ = make_loop(tmp_path / "demo_run")
    first.step(1, frames(1))  # 12 labelled pairs in tmp_path/demo_run/pairs
    opts = dataclasses.replace(OPTS, init_pairs=str(tmp_path / "demo_run/pairs"))
    loop, labelers = make_loop(tmp_path / "run", opts, fail_first=1)
    assert len(loop.pairs) == 12 and all("copied_from" in e["provenance"] for e in loop.pairs.entries)
    metrics, model = loop.step(1, frames(5, 1))  # the round fails, yet the adopted pairs give a first model
    assert model is not None and metrics["reward_model/pairs"] == 12 and metrics["labels/requested"] == 12
    assert metrics["labels/pending"] == 12
