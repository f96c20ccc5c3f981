"""A minimal OpenAI-compatible chat endpoint on 127.0.0.1 whose reply text a test scripts.

It knows nothing of the project: ``answer(body, items)`` gets the request body and the first JSON
object in the last user message (text after it aside; ``{}`` if none) and returns the assistant's
text; this class only wraps it in a chat.completion and serves it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class ScriptedServer:
    def __init__(self, answer: Callable[[dict, dict], str]):
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                items = json.JSONDecoder().raw_decode(user, user.index("{"))[0] if "{" in user else {}
                content = answer(body, items if isinstance(items, dict) else {})
                out = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


class TableServer(ScriptedServer):
    """Answers each numbered English sentence from ``replies`` (English -> Chinese); the sentences in
    ``bad`` are answered in English (a reply the checks refuse). ``asked``: every sentence asked."""

    def __init__(self, replies: dict[str, str], bad: frozenset = frozenset()):
        self.asked: list[str] = []
        self.replies, self.bad = replies, set(bad)
        super().__init__(self.answer)

    def answer(self, body: dict, items: dict) -> str:
        self.asked += items.values()
        return json.dumps({k: en if en in self.bad else self.replies[en] for k, en in items.items()},
                          ensure_ascii=False)
