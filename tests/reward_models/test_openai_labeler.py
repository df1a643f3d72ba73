"""The OpenAI-compatible labeler against a local chat-completions server."""

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from envs.instruction import encode_instruction
from reward_models.labelers.openai_http import OpenAILabeler
from reward_models.pairs import Pair


class Server:
    """POST /v1/chat/completions. Stage 1 says which image is brighter; stage 2 answers from that."""

    def __init__(self):
        self.requests, self.auth, self.fail_with, self.sleep_first, self.answer_override = 0, [], [], 0.0, None
        self.fail_body, self.finish_reason, self.max_tokens_seen = {"error": "try again"}, "stop", []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                with server.lock:
                    server.requests += 1
                    n = server.requests
                    fail = server.fail_with.pop(0) if server.fail_with else None
                    server.auth.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.max_tokens_seen.append(body.get("max_tokens"))
                if n == 1 and server.sleep_first:
                    time.sleep(server.sleep_first)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if fail:
                    return self._send(fail, server.fail_body)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": server.reply(body)},
                                              "finish_reason": server.finish_reason}]})

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reply(self, body) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):  # stage 1: two images
            urls = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
            assert len(urls) == 2
            means = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))).mean() for u in urls]
            return f"Image {1 + int(means[1] > means[0])} is brighter."
        if self.answer_override is not None:
            return self.answer_override
        m = re.search(r"Image (\d) is brighter", content)
        return str(int(m.group(1)) - 1)

    def close(self):
        self.httpd.shutdown()


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
