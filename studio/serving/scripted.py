"""A deterministic OpenAI-compatible server for tests, benchmarks and dry runs of recipes.

It answers ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` with scripted text,
after a fixed latency (``stream: true`` gets the text as server-sent events, the latency spread
over the chunks), and injects the failures real APIs have, on demand:

- markers in the last user message (or prompt): ``[[429]]``, ``[[500]]``, ``[[timeout]]``,
  ``[[malformed]]``, ``[[slow]]`` fail the first attempt of that request (``[[500x3]]`` the
  first three); ``[[fail]]`` always answers 500 and ``[[400]]`` always 400;
- ``fault_rates``: a share of attempts failing per kind, chosen by a hash of the request and the
  attempt number, so a run is reproducible;
- ``max_concurrency``: requests beyond it get 429 with ``Retry-After``, like a real capacity cap.
  A slot is freed when its answer is ready, before it is written, so a client that never has
  more than the cap in flight never sees this 429;
- ``hold_after``: answer that many requests, then hold every later one until :meth:`release`
  (a run stopped half-way at a known point, whatever the machine's speed).

Every request is logged (path, request hash, attempt, status) so tests can prove what was sent;
``GET /state`` tells a test driving a child server how many requests are in flight.
:meth:`ScriptedServer.stop` ends it deterministically: waiting handlers wake at once, idle
keep-alive connections are closed and the port is free when it returns.
Run it standalone with ``python -m studio.serving.scripted --port 0 --latency 0.05``; it stops on
SIGINT, SIGTERM or (with ``--exit-with-stdin``) when its stdin closes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MARKER = re.compile(r"\[\[(429|500|timeout|malformed|slow|fail|400)(?:x(\d+))?\]\]")
FAULT_KINDS = ("429", "500", "timeout", "malformed", "slow")
STOP_JOIN_SECONDS = 5.0  # per thread; handlers wake at once on stop, this only bounds a bug


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


class _Closing(Exception):
    """The server is stopping: the request in hand gets no answer."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler must never keep the interpreter alive
    block_on_close = False  # stop() joins the handlers itself, with a bound


class ScriptedServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 max_concurrency: int | None = None, retry_after: float = 0.05,
                 responder: Callable[[str, dict, int], str] | None = None,
                 fault_rates: dict[str, float] | None = None, timeout_sleep: float = 5.0,
                 slow_factor: float = 10.0, completions: bool = True, model: str = "scripted-model",
                 api_key: str | None = None, rate_limit_headers: bool = False, hold_after: int | None = None):
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
        self.hold_after = hold_after
        self.log: list[dict[str, Any]] = []
        self.active = 0
        self.peak_active = 0
        self.held = 0  # requests waiting for release()
        self._admitted = 0  # requests past the capacity check, for hold_after
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._released = threading.Event()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._busy: set[threading.Thread] = set()  # handlers inside a request, until their answer is written
        self._idle = threading.Condition(self._lock)
        self._httpd = _HTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ScriptedServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and return once the port is free and every handler has ended.

        Safe to call twice, before ``start()``, or from a handler thread. Never blocks on
        ``shutdown()`` unless ``serve_forever`` is running on another thread: called from the
        serving thread itself (or with no loop running) it would wait forever."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._closing.set()  # handlers sleeping on latency, timeouts or a hold wake up now
        serving = self._thread
        if serving is not None and serving.is_alive() and threading.current_thread() is not serving:
            self._httpd.shutdown()
            serving.join(STOP_JOIN_SECONDS)
        self._httpd.server_close()  # the listening socket: no new connections
        with self._lock:
            # Woken handlers write their 503 (or end their stream) before connections are cut.
            me = threading.current_thread()
            self._idle.wait_for(lambda: not self._busy - {me}, STOP_JOIN_SECONDS)
            connections = dict(self._connections)
        for conn in connections.values():
            try:  # an idle keep-alive handler waits in readline(): EOF ends it
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in connections:
            if thread is not threading.current_thread():
                thread.join(STOP_JOIN_SECONDS)

    def release(self) -> None:
        """Let the requests held by ``hold_after`` (and every later one) through."""
        self._released.set()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- log queries ------------------------------------------------------------------------

    def answered(self) -> list[dict[str, Any]]:
        """Requests that got a usable answer."""
        with self._lock:
            return [e for e in self.log if e["status"] == 200 and e["fault"] in (None, "slow")]

    def requests_for(self, hash_: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.log if e["hash"] == hash_]

    # --- behaviour --------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._closing.wait(seconds):
            raise _Closing()

    def _hold(self) -> None:
        with self._lock:
            self._admitted += 1
            held = self.hold_after is not None and self._admitted > self.hold_after
            self.held += held
        if not held:
            return
        try:
            while not self._released.wait(0.05):
                if self._closing.is_set():
                    raise _Closing()
        finally:
            with self._lock:
                self.held -= 1

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

            def setup(self):
                super().setup()
                with server._lock:
                    server._connections[threading.current_thread()] = self.connection

            def finish(self):
                with server._lock:
                    server._connections.pop(threading.current_thread(), None)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args):  # quiet: the structured log is what tests read
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _error(self, status: int, message: str, headers=None, kind="invalid_request_error"):
                self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)

            def _stream(self, endpoint: str, body: dict[str, Any], seconds: float) -> bool:
                """The answer as server-sent events, one word a chunk, ``seconds`` spread over them;
                False when the stream was cut (the client left or the server is stopping)."""
                answer = server._answer(endpoint, body)
                head = {k: answer[k] for k in ("id", "created", "model")}
                head["object"] = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
                chunks = []
                for choice in answer["choices"]:
                    text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
                    words = re.findall(r"\S+\s*", text) or [""]
                    for word in words:
                        delta = {"delta": {"content": word}} if endpoint == "chat" else {"text": word}
                        chunks.append({**head, "choices": [{"index": choice["index"], **delta, "finish_reason": None}]})
                    end = {"delta": {}} if endpoint == "chat" else {"text": ""}
                    chunks.append({**head, "choices": [{"index": choice["index"], **end, "finish_reason": "stop"}]})
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in chunks + ["[DONE]"]:
                        server._sleep(seconds / len(chunks))
                        text = chunk if isinstance(chunk, str) else json.dumps(chunk)
                        payload = f"data: {text}\n\n".encode()
                        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return True
                except (BrokenPipeError, ConnectionResetError, _Closing):
                    self.close_connection = True  # the client sees the stream end early
                    return False

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "created": 0, "owned_by": "studio"}]})
                elif self.path.rstrip("/") == "/state":  # what a test driving a child server waits for
                    with server._lock:
                        state = {"active": server.active, "held": server.held, "logged": len(server.log)}
                    self._send(200, state)
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self):
                with server._lock:
                    server._busy.add(threading.current_thread())
                try:
                    self._post()
                finally:
                    with server._lock:
                        server._busy.discard(threading.current_thread())
                        server._idle.notify_all()

            def _post(self):
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
                active = True

                def free_slot():
                    # The slot is free once the answer is decided, before it is written: the client
                    # reads the answer after this, so it can never be refused for a slot it released.
                    nonlocal active
                    if active:
                        active = False
                        with server._lock:
                            server.active -= 1

                try:
                    if over:
                        entry["status"] = 429
                        wait = server.retry_after
                        free_slot()
                        return self._error(429, "too many concurrent requests", {
                            "Retry-After": f"{wait:g}", "retry-after-ms": str(int(wait * 1000))}, kind="rate_limit_error")
                    server._hold()
                    text = _request_text(endpoint, body)
                    fault = server._fault(text, hash_, attempt)
                    entry["fault"] = fault
                    delay = server.latency * (server.slow_factor if fault == "slow" else 1)
                    if fault == "timeout":
                        delay = server.timeout_sleep
                    stream = bool(body.get("stream")) and fault in (None, "slow")
                    if not stream:
                        server._sleep(delay)
                    if fault == "429":
                        entry["status"] = 429
                        free_slot()
                        return self._error(429, "rate limited", {"Retry-After": "0.1", "retry-after-ms": "100"},
                                           kind="rate_limit_error")
                    if fault in ("500", "fail"):
                        entry["status"] = 500
                        free_slot()
                        return self._error(500, "internal error", kind="server_error")
                    if fault == "400":
                        entry["status"] = 400
                        free_slot()
                        return self._error(400, "this request is invalid")
                    if fault == "malformed":
                        entry["status"] = 200  # a 200 whose body is not JSON
                        free_slot()
                        return self._send(200, None, raw=b'{"id": "x", "choices": [ {broken')
                    entry["status"] = 200
                    if stream:  # busy until the last chunk is out
                        if not self._stream(endpoint, body, delay):
                            entry["fault"] = "cut"  # the stream ended early: not an answer
                        free_slot()
                        return
                    answer = server._answer(endpoint, body)
                    free_slot()
                    self._send(200, answer, server._rate_headers())
                except _Closing:
                    entry["status"] = 503
                    free_slot()
                    self.close_connection = True
                    self._error(503, "the server is shutting down", {"Connection": "close"}, kind="server_error")
                finally:
                    free_slot()
                    entry["end"] = time.time()
                    with server._lock:
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


def _write_log(path: str, server: ScriptedServer) -> None:
    with server._lock:
        entries = list(server.log)
    with open(path, "w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")


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
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin closes (the parent ended)")
    args = parser.parse_args(argv)
    rates = {k: float(v) for k, _, v in (f.partition("=") for f in args.fault)}

    # The main thread only waits; serving runs on its own thread. A signal handler that called
    # shutdown() on the serving thread would wait for itself forever. The handlers are set
    # explicitly: a child started in the background from a non-interactive shell inherits
    # SIGINT as ignored, and then never hears its parent's SIGINT.
    # A plain flag, not an Event: a handler that took a lock could deadlock on the main thread
    # it interrupted while that thread held the same lock.
    stopping: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.append(signal.Signals(signum).name))
    server = ScriptedServer(host=args.host, port=args.port, latency=args.latency, max_concurrency=args.max_concurrency,
                            retry_after=args.retry_after, fault_rates=rates)
    try:
        server.start()
        if args.exit_with_stdin:
            def watch_stdin() -> None:
                try:
                    while sys.stdin.buffer.read(4096):
                        pass
                except (OSError, ValueError):
                    pass
                stopping.append("stdin closed")

            threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
        print(f"Serving {server.model} at {server.base_url}", flush=True)
        while not stopping:
            time.sleep(0.05)
    finally:  # the log is written however the server ends, even on a signal before the first request
        server.stop()
        if args.log:
            _write_log(args.log, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
