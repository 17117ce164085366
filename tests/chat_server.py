"""A local OpenAI-compatible /v1/chat/completions server for the baseline tests.

`script(n, body, headers)` -> (status, response headers, text) answers request n (from 1); every
request's headers and JSON body are recorded in order.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """The server on a free loopback port; `url` is its /v1 root."""

    def __init__(self, script) -> None:
        self.requests: list[tuple[dict, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = dict(self.headers)
                with server.lock:
                    server.requests.append((headers, body))
                    n = len(server.requests)
                status, extra, text = script(n, body, headers) if self.path == "/v1/chat/completions" \
                    else (404, {}, "no such path")
                payload = text.encode()
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> list[dict]:
        return [body for _, body in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(content) -> tuple[int, dict, str]:
    """A 200 answer whose message content is `content` (None: a null content)."""
    return 200, {}, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}],
                                "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
