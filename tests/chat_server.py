"""A local OpenAI-compatible chat-completions server for labeler tests.

POST /v1/chat/completions. Stage 1 (two images) says which image is brighter; stage 2 answers 0 / 1 from
that. `fail_with` queues error statuses (with `fail_body`), `sleep_first` delays the first request,
`answer_override` replaces stage-2 answers, `finish_reason` is echoed.
"""

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


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
