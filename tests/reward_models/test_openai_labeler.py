"""The OpenAI-compatible labeler against a local chat-completions server."""

import json

import numpy as np
import pytest
from chat_server import Server

from envs.instruction import encode_instruction
from reward_models.labelers.openai_http import OpenAILabeler
from reward_models.pairs import Pair


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _pairs(n=6):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a, b = rng.uniform(0, 1, 2)
        img = lambda v: np.full((1, 16, 16, 3), int(v * 255), np.uint8)  # noqa: E731
        out.append(Pair(img(a), img(b), encode_instruction("open the drawer", 64), "open the drawer",
                        {"source": "s", "episode": i, "t": 0, "length": 1}, {"source": "s", "episode": i, "t": 1, "length": 1},
                        gt_return=[a, b]))
    return out


def _truth(pairs):
    return [float(p.gt_return[1] > p.gt_return[0]) for p in pairs]


def test_labels_swap_check_and_provenance(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_VLM_KEY", "sk-secret")
    pairs = _pairs()
    lab = OpenAILabeler("test-vlm", server.url, api_key_env="TEST_VLM_KEY", cache_dir=tmp_path / "cache")
    results = lab.label(pairs)
    assert [r.label for r in results] == _truth(pairs)
    assert all(r.status == "labeled" and r.provenance["swap_consistent"] for r in results)
    assert server.requests == 4 * len(pairs)  # analysis + answer, twice (swap check)
    assert set(server.auth) == {"Bearer sk-secret"}
    r = results[0]
    assert r.source == "openai:test-vlm" and len(r.provenance["prompt_sha256"]) == 64
    assert "brighter" in r.provenance["raw"][0] and r.provenance["raw"][1] in ("0", "1")
    cached = " ".join(p.read_text() for p in (tmp_path / "cache").iterdir())
    assert "sk-secret" not in cached and "sk-secret" not in json.dumps([x.provenance for x in results])
    # A second run over the same pairs is served from the cache: no new HTTP calls.
    again = OpenAILabeler("test-vlm", server.url, api_key_env="TEST_VLM_KEY", cache_dir=tmp_path / "cache")
    assert [x.label for x in again.label(pairs)] == _truth(pairs) and again.calls == 0


def test_retries_429_500_and_timeouts(server):
    server.fail_with = [None, 429, 500, 503]  # request 1 times out (sleep), then three errors
    server.sleep_first = 1.0
    lab = OpenAILabeler("m", server.url, timeout=0.3, swap_check=False, concurrency=1, backoff_max=0.05)
    pairs = _pairs(3)
    results = lab.label(pairs)
    assert [r.label for r in results] == _truth(pairs)
    assert lab.calls == server.requests == 2 * 3 + 4  # 1 timeout + 3 errors retried


def test_persistent_failure_keeps_every_pair_unlabeled(server):
    server.fail_with = [500] * 1000
    lab = OpenAILabeler("m", server.url, max_attempts=2, backoff_max=0.01, swap_check=False)
    pairs = _pairs(4)
    results = lab.label(pairs)
    assert len(results) == 4 and all(r.status == "unlabeled" for r in results)
    assert "HTTPStatusError" in results[0].provenance["error"]


def test_the_servers_reason_for_an_error_is_kept(server):
    server.fail_with = [400] * 100  # not retried: a bad request stays bad
    server.fail_body = {"error": {"message": "Image features and image tokens do not match", "type": "invalid_request"}}
    results = OpenAILabeler("m", server.url, swap_check=False).label(_pairs(2))
    assert server.requests == 2 and all(r.status == "unlabeled" for r in results)
    error = results[0].provenance["error"]
    assert "HTTP 400 Bad Request" in error and "Image features and image tokens do not match" in error
    server.fail_body = "<html>upstream exploded</html>"  # a non-JSON body is kept as text
    server.fail_with = [502] * 100
    error = OpenAILabeler("m", server.url, swap_check=False, max_attempts=1).label(_pairs(1))[0].provenance["error"]
    assert "HTTP 502" in error and "upstream exploded" in error


def test_a_reply_cut_at_max_tokens_is_reported_and_not_used_or_cached(server, tmp_path):
    server.finish_reason = "length"
    lab = OpenAILabeler("m", server.url, swap_check=False, max_tokens=7, cache_dir=tmp_path / "cache")
    results = lab.label(_pairs(2))
    assert all(r.status == "unlabeled" and "reply cut at max_tokens=7" in r.provenance["error"] for r in results)
    assert set(server.max_tokens_seen) == {7} and server.requests == 2  # a cut reply is not retried
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    server.finish_reason = "stop"  # the same pairs with a larger limit are labelled: nothing stale was cached
    again = OpenAILabeler("m", server.url, swap_check=False, max_tokens=64, cache_dir=tmp_path / "cache").label(_pairs(2))
    assert [r.label for r in again] == _truth(_pairs(2))


def test_unsure_and_unparseable_answers_abstain(server):
    pairs = _pairs(2)
    server.answer_override = "-1"
    assert all(r.status == "abstain" for r in OpenAILabeler("m", server.url, swap_check=False).label(pairs))
    server.answer_override = "I think the second one, probably"
    results = OpenAILabeler("m", server.url, swap_check=False).label(pairs)
    assert all(r.status == "abstain" and r.provenance["parse_failure"] for r in results)


def test_cli_keeps_failed_pairs_and_retries_them(server, tmp_path, capsys):
    from reward_models.pairs import PairDataset
    from vla_rl.cli import main

    demos = tmp_path / "demos"
    assert main(["collect", "--env", "tabletop/push-to-target", "--episodes", "3", "--out", str(demos)]) == 0
    server.fail_with = [500] * 1000
    server.fail_body = {"error": {"message": "CUDA out of memory"}}
    args = ["reward", "label", "--labeler", "openai", "--vlm_model", "m", "--base_url", server.url, "--max_attempts", "1",
            "--swap_check", "false", "--out", str(tmp_path / "pairs"), "--pairs", "5", "--max_tokens", "33"]
    capsys.readouterr()
    # Every call failed: exit 2 with the server's reason in one line; the pairs are kept for a retry.
    assert main([*args, "--data", f"[{demos}]"]) == 2
    err = capsys.readouterr().err
    assert "error: labeler openai:m: none of 5 pairs was answered" in err and "CUDA out of memory" in err
    assert "--retry_unlabeled true" in err
    assert PairDataset(tmp_path / "pairs").counts() == {"unlabeled": 5, "labeled": 0, "abstain": 0}
    assert "CUDA out of memory" in PairDataset(tmp_path / "pairs").load(0).provenance["error"]
    server.fail_with = []
    assert main([*args, "--retry_unlabeled", "true"]) == 0
    assert set(server.max_tokens_seen) == {33}
    counts = PairDataset(tmp_path / "pairs").counts()
    assert counts["unlabeled"] == 0 and counts["labeled"] + counts["abstain"] == 5
