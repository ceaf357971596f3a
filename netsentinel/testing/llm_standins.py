"""Loopback stand-ins for LLM servers, for tests: real HTTP on 127.0.0.1,
spoken to by the real client libraries (zhipuai, ollama, httpx).

One server speaks both dialects:
  POST .../chat/completions   OpenAI-compatible (zhipuai, vLLM, LM Studio)
  POST /api/chat              Ollama
  GET  /api/tags, .../models  model lists (for probes)

`server.answer` decides each reply from the request: a preset from
ANSWERS or any callable(request_json) -> (http_status, text). `delay`
makes every call slow. Every request is kept in `server.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MEDIUM_VERDICT = {"level": "MEDIUM", "category": "standin_medium", "confidence": 0.7,
                  "reason": "stand-in model: unusual but not malicious",
                  "recommended_action": "monitor"}
CRITICAL_VERDICT = {"level": "CRITICAL", "category": "standin_critical", "confidence": 0.97,
                    "reason": "stand-in model: looks like command and control",
                    "recommended_action": "ban the destination"}
INFO_VERDICT = {"level": "INFO", "category": "normal", "confidence": 0.99,
                "reason": "stand-in model: the data told me this is harmless",
                "recommended_action": "none"}


def user_text(req: dict) -> str:
    return "\n".join(m.get("content", "") for m in req.get("messages", []) if m.get("role") == "user")


def gullible(req: dict) -> tuple[int, str]:
    """A model that obeys instructions found in the data: if the event text
    says to answer INFO, it answers INFO."""
    if "ignore" in user_text(req).lower():
        return 200, json.dumps(INFO_VERDICT)
    return 200, json.dumps(MEDIUM_VERDICT)


def schema_refused(req: dict) -> tuple[int, str]:
    """A server with JSON mode but no JSON-schema support (as DeepSeek's
    API): HTTP 400 to a json_schema response_format."""
    if (req.get("response_format") or {}).get("type") == "json_schema":
        return 400, "response_format json_schema is not supported"
    return 200, json.dumps(MEDIUM_VERDICT)


ANSWERS: dict[str, Callable[[dict], tuple[int, str]]] = {
    "medium": lambda req: (200, json.dumps(MEDIUM_VERDICT)),
    "critical": lambda req: (200, "Sure! Here is my verdict:\n```json\n"
                             + json.dumps(CRITICAL_VERDICT) + "\n```"),
    "think_then_info": lambda req: (200, "<think>the user wants JSON</think>" + json.dumps(INFO_VERDICT)),
    "malformed": lambda req: (200, '{"level": "HIGH", "category": "oops", "confidence": '),
    "wrong_schema": lambda req: (200, json.dumps({"level": "SEVERE", "confidence": "very"})),
    "http500": lambda req: (500, "internal stand-in failure"),
    "gullible": gullible,
    "schema_refused": schema_refused,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, obj) -> None:
        body = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(obj, str) else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: expected in timeout tests

    def do_GET(self):
        srv = self.server.standin
        if self.path.rstrip("/").endswith("/api/tags"):
            self._send(200, {"models": [{"name": m, "model": m} for m in srv.models]})
        elif self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in srv.models]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        srv = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            req = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": "bad json"})
            return
        with srv.lock:
            srv.requests.append({"path": self.path, "json": req,
                                 "headers": dict(self.headers.items())})
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
        try:
            if srv.delay:
                time.sleep(srv.delay)
            status, text = srv.answer(req)
            model = req.get("model", "standin")
            if self.path.rstrip("/").endswith("/api/chat"):
                if status != 200:
                    self._send(status, {"error": text})
                    return
                self._send(200, {"model": model, "created_at": "2026-11-21T22:40:00.000000Z",
                                 "message": {"role": "assistant", "content": text},
                                 "done": True, "done_reason": "stop", "total_duration": 1,
                                 "eval_count": 1, "prompt_eval_count": 1})
            elif self.path.rstrip("/").endswith("/chat/completions"):
                if status != 200:
                    self._send(status, {"error": {"code": str(status), "message": text}})
                    return
                self._send(200, {"id": "standin-1", "object": "chat.completion",
                                 "created": int(time.time()), "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                           "total_tokens": 2}})
            else:
                self._send(404, {"error": f"no route {self.path}"})
        finally:
            with srv.lock:
                srv.active -= 1


class StandinServer:
    """with StandinServer("medium") as s: ... s.url ..."""

    def __init__(self, answer: str | Callable = "medium", *, delay: float = 0.0,
                 models: tuple = ("qwen3:8b", "standin-model")):
        self.answer = ANSWERS[answer] if isinstance(answer, str) else answer
        self.delay = delay
        self.models = list(models)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.standin = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def set_answer(self, answer: str | Callable) -> None:
        self.answer = ANSWERS[answer] if isinstance(answer, str) else answer

    def chat_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith(("chat/completions", "/api/chat"))]

    def __enter__(self) -> "StandinServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


if __name__ == "__main__":  # a stand-in to try the analyzer by hand
    import argparse

    ap = argparse.ArgumentParser(description="run an LLM stand-in on loopback")
    ap.add_argument("answer", nargs="?", default="medium", choices=sorted(ANSWERS))
    ap.add_argument("--delay", type=float, default=0.0)
    a = ap.parse_args()
    with StandinServer(a.answer, delay=a.delay) as s:
        print(f"stand-in on {s.url} (OpenAI: {s.url}/v1, Ollama: {s.url})", flush=True)
        threading.Event().wait()
