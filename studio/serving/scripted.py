"""A deterministic OpenAI-compatible server for tests, benchmarks and dry runs of recipes.

It answers ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` with scripted text,
after a fixed latency, and injects the failures real APIs have, on demand:

- markers in the last user message (or prompt): ``[[429]]``, ``[[500]]``, ``[[timeout]]``,
  ``[[malformed]]``, ``[[slow]]`` fail the first attempt of that request (``[[500x3]]`` the
  first three); ``[[fail]]`` always answers 500 and ``[[400]]`` always 400;
- ``fault_rates``: a share of attempts failing per kind, chosen by a hash of the request and the
  attempt number, so a run is reproducible;
- ``max_concurrency``: requests beyond it get 429 with ``Retry-After``, like a real capacity cap.

Every request is logged (path, request hash, attempt, status) so tests can prove what was sent.
Run it standalone with ``python -m studio.serving.scripted --port 0 --latency 0.05``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MARKER = re.compile(r"\[\[(429|500|timeout|malformed|slow|fail|400)(?:x(\d+))?\]\]")
FAULT_KINDS = ("429", "500", "timeout", "malformed", "slow")


def body_hash(body: dict[str, Any]) -> str:
    material = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def default_responder(endpoint: str, body: dict[str, Any], choice: int) -> str:
    """Deterministic text: an echo of the request's last words, numbered per choice."""
    if endpoint == "chat":
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content") or "")
    else:
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    words = MARKER.sub("", text).split()
    return f"Answer {choice + 1}: " + " ".join(words[-12:])


class ScriptedServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 max_concurrency: int | None = None, retry_after: float = 0.05,
                 responder: Callable[[str, dict, int], str] | None = None,
                 fault_rates: dict[str, float] | None = None, timeout_sleep: float = 5.0,
                 slow_factor: float = 10.0, completions: bool = True, model: str = "scripted-model",
                 api_key: str | None = None, rate_limit_headers: bool = False):
        self.latency = latency
        self.max_concurrency = max_concurrency
        self.retry_after = retry_after
        self.responder = responder or default_responder
        self.fault_rates = dict(fault_rates or {})
        self.timeout_sleep = timeout_sleep
        self.slow_factor = slow_factor
        self.completions = completions
        self.model = model
        self.api_key = api_key
        self.rate_limit_headers = rate_limit_headers
        self.log: list[dict[str, Any]] = []
        self.active = 0
        self.peak_active = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- log queries ------------------------------------------------------------------------

    def answered(self) -> list[dict[str, Any]]:
        """Requests that got a usable answer."""
        return [e for e in self.log if e["status"] == 200 and e["fault"] in (None, "slow")]

    def requests_for(self, hash_: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["hash"] == hash_]

    # --- behaviour --------------------------------------------------------------------------

    def _fault(self, text: str, hash_: str, attempt: int) -> str | None:
        match = MARKER.search(text)
        if match:
            kind, times = match.group(1), int(match.group(2) or 1)
            if kind in ("fail", "400"):
                return kind
            if attempt <= times:
                return kind
        for kind, rate in self.fault_rates.items():
            digest = hashlib.sha256(f"{hash_}:{attempt}:{kind}".encode()).digest()
            if int.from_bytes(digest[:4], "big") / 2**32 < rate:
                return kind
        return None

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args):  # quiet: the structured log is what tests read
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _error(self, status: int, message: str, headers=None, kind="invalid_request_error"):
                self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "studio"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = self.path.rstrip("/")
                endpoint = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}.get(path)
                if endpoint is None or (endpoint == "completions" and not server.completions):
                    return self._error(404, f"no route {self.path}")
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._error(401, "invalid API key", kind="authentication_error")
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    return self._error(400, "body is not JSON")
                hash_ = body_hash(body)
                with server._lock:
                    attempt = server._attempts.get(hash_, 0) + 1
                    server._attempts[hash_] = attempt
                    server.active += 1
                    server.peak_active = max(server.peak_active, server.active)
                    over = server.max_concurrency is not None and server.active > server.max_concurrency
                entry = {"time": time.time(), "path": path, "hash": hash_, "attempt": attempt, "status": None,
                         "fault": None}
                try:
                    if over:
                        entry["status"] = 429
                        wait = server.retry_after
                        return self._error(429, "too many concurrent requests", {
                            "Retry-After": f"{wait:g}", "retry-after-ms": str(int(wait * 1000))}, kind="rate_limit_error")
                    text = _request_text(endpoint, body)
                    fault = server._fault(text, hash_, attempt)
                    entry["fault"] = fault
                    delay = server.latency * (server.slow_factor if fault == "slow" else 1)
                    if fault == "timeout":
                        delay = server.timeout_sleep
                    if delay:
                        time.sleep(delay)
                    if fault == "429":
                        entry["status"] = 429
                        return self._error(429, "rate limited", {"Retry-After": "0.1", "retry-after-ms": "100"},
                                           kind="rate_limit_error")
                    if fault in ("500", "fail"):
                        entry["status"] = 500
                        return self._error(500, "internal error", kind="server_error")
                    if fault == "400":
                        entry["status"] = 400
                        return self._error(400, "this request is invalid")
                    if fault == "malformed":
                        entry["status"] = 200  # a 200 whose body is not JSON
                        return self._send(200, None, raw=b'{"id": "x", "choices": [ {broken')
                    entry["status"] = 200
                    self._send(200, server._answer(endpoint, body), server._rate_headers())
                finally:
                    entry["end"] = time.time()
                    with server._lock:
                        server.active -= 1
                        server.log.append(entry)

        return Handler

    def _rate_headers(self) -> dict[str, str]:
        if not self.rate_limit_headers:
            return {}
        return {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "999",
                "x-ratelimit-reset-requests": "60ms"}

    def _answer(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get("n") or 1)
        texts = [self.responder(endpoint, body, i) for i in range(n)]
        prompt_tokens = len(_request_text(endpoint, body).split())
        completion_tokens = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        created = int(time.time())
        if endpoint == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                        "logprobs": None} for i, t in enumerate(texts)]
            return {"id": f"chatcmpl-{body_hash(body)}", "object": "chat.completion", "created": created,
                    "model": body.get("model", self.model), "choices": choices, "usage": usage}
        choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
        return {"id": f"cmpl-{body_hash(body)}", "object": "text_completion", "created": created,
                "model": body.get("model", self.model), "choices": choices, "usage": usage}


def _request_text(endpoint: str, body: dict[str, Any]) -> str:
    if endpoint == "chat":
        return "\n".join(str(m.get("content") or "") for m in body.get("messages") or [])
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else "\n".join(map(str, prompt))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.serving.scripted", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--max-concurrency", type=int, help="beyond this, answer 429 with Retry-After")
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE", help=f"kinds: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--log", help="write the request log as JSONL here on exit")
    args = parser.parse_args(argv)
    rates = {k: float(v) for k, _, v in (f.partition("=") for f in args.fault)}
    server = ScriptedServer(host=args.host, port=args.port, latency=args.latency, max_concurrency=args.max_concurrency,
                            retry_after=args.retry_after, fault_rates=rates)
    print(f"Serving scripted-model at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if args.log:
            with open(args.log, "w", encoding="utf-8") as fh:
                for entry in server.log:
                    fh.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
