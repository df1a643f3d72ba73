"""docs/preferences.md, "Adding a labeler": the page's code block, run as written, registers a labeler that answers
every pair (labeled / abstain / unlabeled), that `vla-rl reward label` and the online loop's labeler client use by
name, and that the options' validation accepts; registration and entry points refuse what does not fit."""

import json
from pathlib import Path

import numpy as np
import pytest
from doc_blocks import python_block

import reward_models.labelers as labelers
from envs.instruction import encode_instruction
from reward_models.config import LabelerOptions, PreferenceOptions
from reward_models.labeler_actor import LocalLabelers
from reward_models.pairs import Pair, PairDataset
from vla_rl.base.errors import ConfigError
from vla_rl.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "preferences.md"


def _doc_example() -> str:
    return python_block("preferences.md", "## Adding a labeler")


@pytest.fixture
def margin():
    """The page's block, as a user would paste it; the registry is as before afterwards."""
    before = dict(labelers._FACTORIES)
    namespace = {}
    exec(compile(_doc_example(), str(DOC), "exec"), namespace)
    yield namespace
    labelers._FACTORIES.clear(), labelers._FACTORIES.update(before)


def _pair(progress, t=0):
    image = np.full((1, 16, 16, 3), t, np.uint8)
    return Pair(image, image + 1, encode_instruction("open the drawer", 64), "open the drawer",
                {"source": "s", "episode": 0, "t": t, "length": 1}, {"source": "s", "episode": 1, "t": t, "length": 1},
                progress=progress)


def test_the_documented_labeler_answers_every_pair(margin):
    pairs = [_pair([[0.1], [0.6]], 0), _pair([[0.9], [0.2]], 1), _pair([[0.5], [0.52]], 2), _pair(None, 3)]
    results = labelers.make_labeler(LabelerOptions(labeler="progress-margin"), "unused").label(pairs)
    assert [(r.status, r.label) for r in results] == [("labeled", 1.0), ("labeled", 0.0), ("abstain", None),
                                                      ("unlabeled", None)]
    assert {r.source for r in results} == {"progress-margin:0.05"}


def test_vla_rl_reward_label_labels_demo_pairs_with_it(margin, tmp_path):
    demos, pairs = tmp_path / "demos", tmp_path / "pairs"
    assert main(["collect", "--env", "tabletop/touch-color", "--episodes", "2", "--out", str(demos),
                 "--env_options.image_size", "32"]) == 0
    assert main(["reward", "label", "--data", f"[{demos}]", "--labeler", "progress-margin", "--pairs", "8",
                 "--out", str(pairs)]) == 0
    entries = json.loads((pairs / "pairs.json").read_text())["pairs"]
    assert len(entries) == len(PairDataset(pairs)) > 0
    assert {e["status"] for e in entries} <= {"labeled", "abstain"} and any(e["status"] == "labeled" for e in entries)
    assert {e["label_source"] for e in entries} == {"progress-margin:0.05"}
    for e in entries:  # the label agrees with the privileged progress it was read from
        gap = e["progress"][1][-1] - e["progress"][0][-1]
        assert e["label"] == (float(gap > 0) if abs(gap) >= 0.05 else None)


def test_the_online_loops_labeler_client_uses_it_by_name(margin, tmp_path):
    opts = PreferenceOptions(labeler="progress-margin")
    # `vla-rl train` builds the loop's labeler in a Ray actor, where a labeler registered in this process does not
    # exist: refused before anything is written (an installed entry point is accepted: the next test)
    with pytest.raises(ConfigError, match=r"registered in this process only.*vla_rl.labelers entry point"):
        opts.validate()
    client = LocalLabelers(opts, tmp_path)  # the loop's in-process client (tests) takes it by name
    results = client.result(client.submit([_pair([[0.0], [1.0]])], seed=0))
    assert client.name == "progress-margin" and [r.label for r in results] == [1.0]


def test_an_unknown_labeler_is_refused_with_the_names_taken(margin):
    with pytest.raises(ConfigError, match=r"labeler='nope' is not allowed.*'progress-margin'"):
        LabelerOptions(labeler="nope").validate_labeler()
    with pytest.raises(ValueError, match="not registered"):
        labelers.make_labeler(LabelerOptions(labeler="nope"), "unused")


def test_registration_refuses_a_taken_name_or_a_non_callable(margin):
    with pytest.raises(ValueError, match="registered already"):
        labelers.register_labeler("progress-margin", lambda opts, cache_dir, seed: None)
    with pytest.raises(ValueError, match="registered already"):
        labelers.register_labeler("hf", lambda opts, cache_dir, seed: None)
    with pytest.raises(TypeError, match="not a callable"):
        labelers.register_labeler("broken", object())
    assert "broken" not in labelers.labeler_names()


def test_an_entry_point_labeler_is_found_by_name(margin, monkeypatch):
    class EntryPoint:
        name, value = "from-package", "my_package.labelers:make"

        def load(self):
            return lambda opts, cache_dir, seed: margin["ProgressMarginLabeler"](margin=0.5)

    monkeypatch.setattr(labelers, "entry_points", lambda group: [EntryPoint()] if group == "vla_rl.labelers" else [])
    LabelerOptions(labeler="from-package").validate_labeler()  # validated before anything is imported
    PreferenceOptions(labeler="from-package").validate()  # every process knows an entry point: the online loop too
    assert "from-package" not in labelers._FACTORIES
    assert labelers.make_labeler(LabelerOptions(labeler="from-package"), "unused").name == "progress-margin:0.5"
