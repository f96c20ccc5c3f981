"""A real HTTP server on 127.0.0.1 speaking OpenAI's /v1/chat/completions, for tests and benchmarks.

It "translates" with the project glossary plus a small word list, "rewrites" by joining the
Chinese sentences, counts every request and every sentence it is asked, and injects faults on
demand: ``faults={"429": 2, "500": 1, "slow": 1, "malformed": 1, "wrong_count": 1, "english": 1,
"mood": 3, "body": 1, "401": 1}`` - each number is how many of the next matching requests get that fault.

Run by hand: ``python tests/data/fake_llm.py --port 8000 --latency 0.05``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from remoteglm.data.glossary import apply_glossary  # noqa: E402

WORDS = {
    "there": "", "is": "", "are": "", "a": "一", "an": "一", "the": "", "of": "的", "with": "有", "and": "和",
    "some": "一些", "many": "许多", "lots": "很多", "in": "在", "on": "在", "at": "在", "it": "它", "this": "这",
    "two": "两", "three": "三", "four": "四", "five": "五", "six": "六", "one": "一", "piece": "片",
    "plants": "植物", "plant": "植物", "area": "区域", "arranged": "排列", "neatly": "整齐", "white": "白色",
    "green": "绿色", "grey": "灰色", "gray": "灰色", "red": "红色", "blue": "蓝色", "dark": "深色",
    "black": "黑色", "brown": "棕色", "orange": "橙色", "straight": "笔直", "go": "穿过", "goes": "穿过",
    "through": "穿过", "beside": "旁边", "surrounded": "环绕", "by": "被", "lines": "成行", "dense": "密集",
    "ground": "地面", "parked": "停着", "other": "其他", "each": "每个", "sand": "沙子", "sands": "沙子",
    "water": "水", "waters": "水域", "lot": "块", "across": "横跨", "scattered": "散布", "small": "小",
    "big": "大", "large": "大", "old": "旧", "new": "新", "here": "这里", "very": "非常", "no": "没有",
    "not": "不", "while": "同时", "to": "到", "as": "如", "which": "其", "has": "有", "have": "有",
    "docked": "停靠", "stopped": "停着", "closed": "紧挨", "together": "一起", "side": "侧", "both": "两",
    "over": "上方", "between": "之间", "around": "周围", "next": "旁边", "near": "附近", "empty": "空",
    "deep": "深", "bare": "裸露", "wide": "宽", "narrow": "窄", "curved": "弯曲", "clear": "清澈",
    "homes": "住宅", "home": "住宅", "grass": "草", "sky": "天空", "shadow": "阴影", "few": "几个",
    "compose": "组成", "composed": "组成", "spaces": "空位", "middle": "中间", "only": "只", "cross": "交叉",
    "vertical": "垂直", "parallel": "平行", "rows": "排", "row": "排", "banks": "岸", "bank": "岸",
}


def fake_translate(english: str) -> str:
    """Glossary terms first, then the word list; unknown words are dropped (no English left)."""
    text = apply_glossary(english)
    out = []
    for tok in re.findall(r"[A-Za-z][A-Za-z-]*|[^A-Za-z\s]+", text):
        if re.match(r"[A-Za-z]", tok):
            out.append(WORDS.get(tok.lower(), ""))
        else:
            out.append(tok)
    zh = "".join(out).strip(" .") or "一幅图像"
    return zh + "。"


def fake_rewrite(sentences: list[str]) -> str:
    return "；".join(s.rstrip("。") for s in sentences) + "。"


class FakeLLM:
    """Start with ``with FakeLLM(latency=0.05) as llm: llm.base_url``."""

    def __init__(self, latency: float = 0.0, faults: dict[str, int] | None = None, slow_seconds: float = 3.0,
                 retry_after: str = "1"):
        self.latency, self.slow_seconds, self.retry_after = latency, slow_seconds, retry_after
        self.faults = Counter(faults or {})
        self.requests = 0  # every POST
        self.by_kind: Counter = Counter()  # 'translate' / 'rewrite' requests
        self.sentence_requests: Counter = Counter()  # English sentence -> times asked
        self.fault_log: list[str] = []
        self.last_auth = ""  # the Authorization header of the last request
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- fault bookkeeping -------------------------------------------------------------
    def _take(self, fault: str) -> bool:
        with self.lock:
            if self.faults[fault] > 0:
                self.faults[fault] -= 1
                self.fault_log.append(fault)
                return True
            return False

    def _handle(self, body: dict) -> tuple[int, dict, bytes]:
        """(status, headers, payload) for one chat request."""
        messages = body.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        if "{" not in user:
            return 400, {}, b'{"error": {"message": "no JSON payload in the user message"}}'
        payload = json.loads(user[user.index("{"):])
        kind = "rewrite" if "合并" in system else "translate"
        with self.lock:
            self.requests += 1
            self.by_kind[kind] += 1
            if kind == "translate":
                self.sentence_requests.update(payload.values())
        if self.latency:
            time.sleep(self.latency)
        if self._take("429"):
            return 429, {"Retry-After": self.retry_after}, b'{"error": {"message": "rate limited"}}'
        if self._take("500"):
            return 500, {}, b'{"error": {"message": "internal error"}}'
        if self._take("slow"):
            time.sleep(self.slow_seconds)
        if self._take("body"):
            return 200, {}, b"<html>upstream proxy error</html>"
        if kind == "translate":
            items = {k: fake_translate(v) for k, v in payload.items()}
            if self._take("wrong_count"):
                items.pop(str(len(items)))
            if self._take("english"):
                items["1"] = items["1"].rstrip("。") + " with trees。"
            content = json.dumps(items, ensure_ascii=False)
            if self._take("malformed"):
                content = "Here are the translations: {" + content[1:-1] + ",}"
        else:
            content = fake_rewrite(payload["sentences"])
            if self._take("mood"):
                content = content.rstrip("。") + "，让人感觉十分宁静。"
        prompt_chars = sum(len(m.get("content", "")) for m in messages)
        reply = {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_chars // 3, "completion_tokens": len(content),
                      "total_tokens": prompt_chars // 3 + len(content)},
        }
        return 200, {}, json.dumps(reply, ensure_ascii=False).encode()

    # -- server ------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (~40 ms)

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.last_auth = self.headers.get("Authorization", "")
                if fake._take("401"):
                    status, headers, data = 401, {}, b'{"error": {"message": "Incorrect API key provided"}}'
                elif self.path.rstrip("/") != "/v1/chat/completions":
                    status, headers, data = 404, {}, b'{"error": {"message": "not found"}}'
                else:
                    status, headers, data = fake._handle(json.loads(raw))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> "FakeLLM":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()
    llm = FakeLLM(latency=args.latency)
    print(llm.start(args.port), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        llm.stop()
