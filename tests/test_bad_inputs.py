"""Every verb against bad input: exit code 2, one line on stderr naming the problem, no traceback,
and nothing written or changed on disk. Add a row for every new command and every new failure."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vla_rl.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Valid inputs of every kind (demos, a policy, pairs, a reward model) and broken variants of each."""
    root = tmp_path_factory.mktemp("inputs")

    def ok(*argv):
        assert main(list(argv)) == 0, argv

    ok("collect", "--episodes", "3", "--out", str(root / "demos"))
    ok("collect", "--episodes", "1", "--out", str(root / "demos40"), "--env_options.image_size", "40")
    ok("pretrain", "--demos", f"[{root / 'demos'}]", "--out", str(root / "pre"), "--policy.preset", "tiny",
       "--steps", "2", "--warmup_steps", "0", "--batch_size", "4", "--eval_every", "-1")
    ok("reward", "label", "--data", f"[{root / 'demos'}]", "--pairs", "20", "--out", str(root / "pairs"))
    ok("reward", "train", "--pairs", f"[{root / 'pairs'}]", "--out", str(root / "rm"), "--epochs", "1",
       "--ensemble_size", "2")
    ok("eval", "--policy", str(root / "pre/checkpoints/last/pretrained_model"), "--episodes", "1", "--videos", "0",
       "--out", str(root / "eval"))
    policy = root / "pre/checkpoints/last/pretrained_model"

    def edit_json(src: Path, dst: Path, file: str, change) -> Path:
        shutil.copytree(src, dst)
        d = json.loads((dst / file).read_text())
        change(d)
        (dst / file).write_text(json.dumps(d))
        return dst

    edit_json(policy, root / "pol_type", "policy.json", lambda d: d["spec"].update(chunk_size="two"))
    edit_json(policy, root / "pol_dim", "policy.json", lambda d: d["spec"].update(action_dim=3))
    unlisted = edit_json(policy, root / "pol_unlisted", "policy.json", lambda d: d["files"].pop("heads.safetensors"))
    (unlisted / "heads.safetensors").write_bytes(b"corrupted")
    edit_json(root / "pairs", root / "pairs_nohdr", "pairs.json", lambda d: d.pop("image_shape"))
    edit_json(root / "pairs", root / "pairs_unlabelled", "pairs.json",
              lambda d: [p.update(status="unlabeled", label=None, label_source=None) for p in d["pairs"]])
    edit_json(root / "rm", root / "rm_ens", "reward_model.json", lambda d: d["config"].update(ensemble_size=3))
    shutil.copytree(root / "demos", root / "demos_corrupt")
    (root / "demos_corrupt/episodes/000001.npz").write_bytes(b"not an archive")
    shutil.copytree(root / "pairs", root / "pairs_corrupt")
    next((root / "pairs_corrupt/segments").iterdir()).write_bytes(b"not an archive")
    (root / "foreign").mkdir()
    (root / "foreign/notes.txt").write_text("a user's file")
    (root / "afile").write_text("a file")
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "bad.yaml").write_text("steps: 10\npolicy: [tiny\n  x: :\n")
    (root / "typo.yaml").write_text("stepz: 10\n")
    (root / "scores.json").write_text("{}")
    return root


P = "pre/checkpoints/last/pretrained_model"
# (verb words, arguments with {r} = the inputs root and {w} = an empty work dir, expected text in the error)
CASES = [
    # config files and options
    (["pretrain"], "--config_path {r}/empty.yaml", "empty.yaml: is empty"),
    (["pretrain"], "--config_path {r}/list.yaml", "list.yaml: is a list"),
    (["pretrain"], "--config_path {r}/nothere.yaml", "nothere.yaml: config file not found"),
    (["pretrain"], "--config_path {r}/demos", "is a directory, not a config file"),
    (["pretrain"], "--config_path {r}/bad.yaml", "bad.yaml:3:4: not valid YAML"),
    (["pretrain"], "--config_path {r}/typo.yaml", "typo.yaml: The fields `stepz` are not valid"),
    (["pretrain"], "--steps abc", "`steps`: Couldn't parse 'abc'"),
    (["envs"], "--family nope", "family='nope'"),
    (["envs"], "--suite metaworld/mt5", "suite: unknown suite 'metaworld/mt5'; did you mean ['metaworld/mt50'"),
    # collect
    (["collect"], "--env tabletop/nope --out {w}/d", "unknown env id"),
    (["collect"], "--suite mt100 --out {w}/d", "suite: unknown suite 'mt100'; did you mean ['mt10'"),
    (["collect"], "--envs [tabletop/touch-color,tabletop/nope] --out {w}/d", "envs[1]: unknown env id 'tabletop/nope'"),
    (["collect"], "--episodes 1 --envs [tabletop/off-center] --out {r}/demos", "demos: is a demo dataset of one env"),
    (["collect"], "--episodes 1 --envs [tabletop/off-center] --out {r}/foreign", "foreign: holds ['notes.txt']"),
    (["collect"], "--env_options.camera nope --episodes 1 --out {w}/d", "env_options.camera='nope'"),
    (["collect"], "--episodes 1 --out {r}/afile", "afile: is a file"),
    (["collect"], "--episodes 1 --out {r}/foreign", "foreign: is not empty and is not a demo dataset"),
    (["collect"], "--episodes 1 --out {r}/pairs", "pairs: is not empty and is not a demo dataset"),
    (["collect"], "--episodes 1 --seed 9 --out {r}/demos_corrupt", "000001.npz: checksum mismatch"),
    (["collect"], "--episodes 1 --env_options.image_size 32 --out {r}/demos", "cannot append — field 'image_shape'"),
    # pretrain
    (["pretrain"], "--demos [{r}/demos40] --policy.preset tiny --warmup_steps 0 --out {w}/p",
     "image size 40 is not a multiple of the preset's patch size 16"),
    (["pretrain"], "--demos [{r}/demos] --device cuda --out {w}/p", "device='cuda'"),
    (["pretrain"], "--demos [{r}/demos] --steps 10 --warmup_steps 50 --out {w}/p", "warmup_steps=50 exceeds steps=10"),
    (["pretrain"], "--demos [{r}/demos] --out {r}/foreign", "foreign: is not empty and is not a pretrain run"),
    (["pretrain"], "--demos [{r}/demos] --policy.preset tiny --out {r}/pre", "already holds a pretrain run"),
    (["pretrain"], "--demos [{r}/demos] --resume true --out {w}/p", "is not a pretrain run to resume"),
    (["pretrain"], "--demos [{r}/nodemos] --out {w}/p", "nodemos/dataset.json: not found"),
    (["pretrain"], "--demos [{r}/demos_corrupt] --out {w}/p", "000001.npz: checksum mismatch"),
    (["pretrain"], "--demos [{r}/demos] --policy.base_model ./no/such/model --out {w}/p",
     "policy.base_model='./no/such/model': no such directory"),
    (["pretrain"], "--demos [{r}/demos] --policy.base_model {r}/demos --out {w}/p", "no config.json"),
    (["pretrain"], "--demos [{r}/demos] --policy.unnorm_key bridge_orig --out {w}/p",
     "policy.unnorm_key='bridge_orig' picks an OpenVLA checkpoint's action statistics"),
    (["pretrain"], "--demos [{r}/demos] --val_episodes 30 --eval_every 100 --val_seed 10010 --out {w}/p",
     "validation seeds 10010-10039 overlap the evaluation seeds 10000-10019"),
    (["pretrain"], "--demos [{r}/demos] --ema_decay 1.5 --out {w}/p", "ema_decay=1.5 is out of range"),
    (["pretrain"], "--demos [{r}/demos] --ema_decay 0.999 --policy.dtype bfloat16 --out {w}/p",
     "would not move in low precision"),
    # eval
    (["eval"], "--policy {r}/" + P + " --device cuda --out {w}/e", "device='cuda'"),
    (["eval"], "--policy {r}/nope --out {w}/e", "nope/policy.json: not found"),
    (["eval"], "--policy {r}/pol_type --out {w}/e", "field 'spec.chunk_size'='two' must be a int"),
    (["eval"], "--policy {r}/pol_dim --out {w}/e", "action_tokenizer.json: has 2 action dimensions"),
    (["eval"], "--policy {r}/pol_unlisted --out {w}/e", "heads.safetensors: not listed in"),
    (["eval"], "--policy {r}/" + P + " --env_options.image_size 32 --out {w}/e", "renders 32x32 images"),
    (["eval"], "--policy {r}/" + P + " --env metaworld/drawer-open --out {w}/e", "takes 4-D actions"),
    (["eval"], "--policy {r}/" + P + " --suite metaworld/mt10 --out {w}/e", "env metaworld/reach takes 4-D actions"),
    (["eval"], "--policy {r}/" + P + " --suite libero/objct --out {w}/e", "suite: unknown suite 'libero/objct'"),
    (["eval"], "--policy {r}/" + P + " --envs [tabletop/touch-color,metaworld/rech] --out {w}/e",
     "envs[1]: unknown env id 'metaworld/rech'"),
    (["eval"], "--policy {r}/" + P + " --out {r}/foreign", "foreign: is not empty and is not an evaluation"),
    (["eval"], "--policy {r}/" + P + " --out {r}/eval", "eval: already holds an evaluation"),
    (["eval"], "--policy {r}/" + P + " --out {r}/afile", "afile: is a file"),
    # train (every check happens before Ray starts or anything is written)
    (["train"], "--policy {r}/nope --out {w}/t", "nope/policy.json: not found"),
    (["train"], "--policy {r}/pol_unlisted --out {w}/t", "heads.safetensors: not listed in"),
    (["train"], "--policy {r}/" + P + " --env metaworld/drawer-open --out {w}/t", "takes 4-D actions"),
    (["train"], "--policy {r}/" + P + " --env_options.image_size 32 --out {w}/t", "renders 32x32 images"),
    (["train"], "--policy {r}/" + P + " --reward model --reward_model {r}/nope --out {w}/t",
     "reward_model.json: not found"),
    (["train"], "--policy {r}/" + P + " --reward model --out {w}/t", "reward=model needs --reward_model"),
    (["train"], "--policy {r}/" + P + " --reward_scale 0.5 --out {w}/t", "reward_scale=0.5 scales learned rewards only"),
    (["train"], "--policy {r}/" + P + " --reward model --reward_model {r}/rm --reward_scale 0 --out {w}/t",
     "reward_scale=0.0 is out of range"),
    (["train"], "--policy {r}/" + P + " --learned_reward delta --out {w}/t", "learned_reward='delta' shapes learned rewards only"),
    (["train"], "--policy {r}/" + P + " --beta -0.1 --out {w}/t", "beta=-0.1 is negative"),
    (["train"], "--policy {r}/" + P + " --minibatch_size 100000 --out {w}/t", "exceeds the batch of 512 decisions"),
    (["train"], "--policy {r}/" + P + " --resume true --out {w}/t", "is not a train run to resume"),
    (["train"], "--policy {r}/" + P + " --out {r}/foreign", "foreign: is not empty and is not a train run"),
    (["train"], "--policy {r}/" + P + " --wandb.mode loud --out {w}/t", "wandb.mode='loud'"),
    (["train"], "--policy {r}/" + P + " --critic_warmup -1 --out {w}/t", "critic_warmup=-1 is out of range"),
    (["train"], "--policy {r}/" + P + " --group_size 3 --out {w}/t", "group_size=3 does not divide envs_per_runner=8"),
    (["train"], "--policy {r}/" + P + " --val_episodes 30 --val_seed 10020 --out {w}/t",
     "validation seeds 10020-10049 overlap the evaluation seeds 10000-10029"),
    (["train"], "--policy {r}/" + P + " --val_episodes 30 --eval_every -1 --out {w}/t", "val_episodes=30 with eval_every=-1"),
    (["train"], "--policy {r}/" + P + " --ray_address 127.0.0.1:1 --out {w}/t", "cannot reach the Ray head at '127.0.0.1:1'"),
    (["train"], "--policy {r}/" + P + ' --runner_resources {{"sim":-1}} --out {w}/t', "runner_resources.sim=-1.0"),
    (["train"], "--policy {r}/" + P + " --gpus_per_learner 1 --out {w}/t", "gpus_per_learner=1.0 needs num_learners >= 1"),
    (["train"], "--policy {r}/" + P + " --base_dtype fp8 --out {w}/t", "base_dtype='fp8' is not allowed"),
    (["train"], "--policy {r}/" + P + " --ratio chunk --out {w}/t", "ratio='chunk' is not allowed"),
    (["train"], "--policy {r}/" + P + " --critic oracle --out {w}/t", "critic='oracle' is not allowed"),
    (["train"], "--policy {r}/" + P + " --critic_gate true --group_size 4 --out {w}/t",
     "critic_gate=true with group_size=4"),
    (["train"], "--policy {r}/" + P + " --target_kl 0.01 --num_learners 2 --out {w}/t",
     "target_kl=0.01 with num_learners=2"),
    (["train"], "--policy {r}/" + P + " --target_kl -1 --out {w}/t", "target_kl=-1.0 is out of range"),
    (["train"], "--policy {r}/" + P + " --eval_sampled maybe --out {w}/t", "eval_sampled"),
    (["train"], "--policy {r}/" + P + " --reward preference --preference.selection random --out {w}/t",
     "preference.selection='random' is not allowed"),
    (["train"], "--policy {r}/" + P + " --reward preference --preference.labeler openai --out {w}/t",
     "preference.labeler='openai' needs --preference.vlm_model"),
    (["train"], "--policy {r}/" + P + " --reward preference --preference.init_pairs {r}/pairs_corrupt --out {w}/t",
     "checksum mismatch"),
    (["train"], "--policy {r}/" + P + " --reward preference --preference.init_reward_model {r}/nope --out {w}/t",
     "nope/reward_model.json: not found"),
    # train over several tasks (--suite / --envs)
    (["train"], "--policy {r}/" + P + " --suite mt100 --out {w}/t", "suite: unknown suite 'mt100'; did you mean ['mt10'"),
    (["train"], "--policy {r}/" + P + " --envs [tabletop/touch-color,tabletop/nope] --out {w}/t",
     "envs[1]: unknown env id 'tabletop/nope'"),
    (["train"], "--policy {r}/" + P + " --env tabletop/touch-color --envs [tabletop/reach-corner] --out {w}/t",
     "give --env for one task, or --suite / --envs for several"),
    (["train"], "--policy {r}/" + P + " --suite metaworld/mt10 --envs_per_runner 10 --out {w}/t",
     "env metaworld/reach takes 4-D actions"),
    (["train"], "--policy {r}/" + P + " --envs [tabletop/touch-color,tabletop/push-to-target] --critic privileged "
     "--out {w}/t", "critic=privileged: env tabletop/push-to-target has a 9-D privileged state"),
    (["train"], "--policy {r}/" + P + " --envs [tabletop/touch-color,tabletop/reach-corner,tabletop/off-center] "
     "--envs_per_runner 2 --out {w}/t", "3 tasks but only 2 envs per iteration"),
    (["train"], "--policy {r}/" + P + " --envs [tabletop/touch-color,tabletop/reach-corner] --group_size 8 --out {w}/t",
     "2 tasks but only 1 env group per iteration"),
    # export
    (["export"], "--checkpoint {r}/nope --out {w}/x", "neither a train checkpoint"),
    (["export"], "--checkpoint {r}/" + P + " --out {r}/foreign", "foreign: is not empty and is not a policy directory"),
    (["export"], "--checkpoint {r}/" + P + " --format onnx --out {w}/x", "format='onnx'"),
    (["export"], "--checkpoint {r}/" + P + " --stats_key my_robot --out {w}/x",
     "stats_key='my_robot' names OpenVLA norm_stats; use it with --format openvla"),
    (["export"], "--checkpoint {r}/" + P + " --format openvla --out {w}/x",
     "was not loaded from an OpenVLA checkpoint; only those export to OpenVLA's layout"),
    # reward label
    (["reward", "label"], "--data [{r}/demos] --segment_length 500 --pairs 2 --out {w}/p", "segment_length=500"),
    (["reward", "label"], "--data [{r}/demos] --labeler hf --vlm_model {r}/demos --pairs 2 --out {w}/p",
     "vlm_model="),
    (["reward", "label"], "--data [{r}/demos] --labeler hf --vlm_model m --vlm_device cuda:3 --out {w}/p",
     "vlm_device='cuda:3'"),
    (["reward", "label"], "--data [{r}/demos] --pairs 2 --out {r}/foreign", "is not a pair dataset"),
    (["reward", "label"], "--data [{r}/demos] --labeler openai --vlm_model m --max_tokens 0 --out {w}/p",
     "max_tokens=0 is out of range"),
    (["reward", "label"], "--data [{r}/demos] --pairs 2 --out {r}/pairs_corrupt", "checksum mismatch"),
    (["reward", "label"], "--data [{r}/demos_corrupt] --pairs 2 --out {w}/p", "000001.npz: checksum mismatch"),
    # reward train
    (["reward", "train"], "--pairs [{r}/pairs_nohdr] --out {w}/m", "field 'image_shape'"),
    (["reward", "train"], "--pairs [{r}/pairs_unlabelled] --out {w}/m", "no labelled pairs"),
    (["reward", "train"], "--pairs [{r}/pairs] --out {r}/foreign", "foreign: is not empty and is not a reward model"),
    (["reward", "train"], "--pairs [{r}/pairs] --out {r}/rm", "rm: already holds a reward model"),
    # reward eval
    (["reward", "eval"], "--model {r}/rm_ens --pairs [{r}/pairs]", "tensors do not match the config"),
    (["reward", "eval"], "--model {r}/rm --pairs [{r}/pairs_unlabelled]", "pairs is labelled, so there is nothing to score"),
    (["reward", "eval"], "--model {r}/rm --pairs [{r}/pairs] --out {r}/scores.json", "scores.json: exists"),
    (["reward", "eval"], "--model {r}/nope --pairs [{r}/pairs]", "reward_model.json: not found"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("verb", "args", "expected"), CASES, ids=[f"{' '.join(c[0])}:{c[2][:40]}" for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, tmp_path, capsys, verb, args, expected):
    work = tmp_path / "work"
    work.mkdir()
    before, before_work = _snapshot(inputs), _snapshot(work)
    capsys.readouterr()
    argv = [*verb, *args.format(r=inputs, w=work).split()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vla-rl {' '.join(verb)}: error: ") and "Traceback" not in err
    assert expected in lines[0], lines[0]
    assert _snapshot(inputs) == before
    assert _snapshot(work) == before_work


def test_overwrite_replaces_only_an_output_of_the_same_kind(inputs, tmp_path, capsys):
    """--overwrite true replaces an earlier reward model, never a directory holding anything else."""
    out = tmp_path / "rm"
    shutil.copytree(inputs / "rm", out)
    train = ["reward", "train", "--pairs", f"[{inputs / 'pairs'}]", "--epochs", "1", "--ensemble_size", "1",
             "--overwrite", "true", "--out"]
    assert main([*train, str(out)]) == 0
    assert json.loads((out / "reward_model.json").read_text())["config"]["ensemble_size"] == 1
    (out / "notes.txt").write_text("mine")
    assert main([*train, str(out)]) == 2
    assert "holds ['notes.txt'], which vla-rl reward train did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and (out / "weights.safetensors").is_file()
    assert main([*train, str(inputs / "foreign")]) == 2  # overwrite never applies to a foreign directory
    assert (inputs / "foreign/notes.txt").read_text() == "a user's file"
