"""The scripted OpenAI-compatible test server ends deterministically: stopped with requests in flight
(slow, timing out, streaming, held, idle keep-alive), in this process or as a child process that
inherited SIGINT as ignored, it returns at once, ends every handler and frees its port; and a child
that ignores every polite signal is still killed and reaped."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from studio.serving.processes import stop_process
from studio.serving.scripted import ScriptedServer

# Far longer than any stop may take, so "stopped before they finished" can't be a close race.
FOREVER = 3600.0
# A bound only a hang can reach: stopping takes milliseconds, the in-flight work takes an hour.
HANG = 60.0


def _post(port: int, body: dict, results: list, path: str = "/v1/chat/completions") -> None:
    """One request on its own connection; appends (status, body text) or the exception."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        results.append((response.status, response.read().decode(errors="replace")))
    except Exception as exc:  # noqa: BLE001 - a cut connection is one of the outcomes tested
        results.append(exc)
    finally:
        conn.close()


def _chat(content: str, **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.01)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        refused = probe.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket() as rebind:
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every HTTP server binds
        rebind.bind(("127.0.0.1", port))
    return refused


def _in_flight(port: int) -> tuple[list[threading.Thread], list]:
    results: list = []
    bodies = [_chat("slow answer"), _chat("never answers [[timeout]]"), _chat("a streaming answer", stream=True)]
    threads = [threading.Thread(target=_post, args=(port, body, results), daemon=True) for body in bodies]
    for thread in threads:
        thread.start()
    return threads, results


def test_stop_with_requests_in_flight_returns_at_once_and_frees_the_port():
    server = ScriptedServer(latency=FOREVER, timeout_sleep=FOREVER).start()
    port = int(server.base_url.split(":")[2].split("/")[0])
    # An idle keep-alive connection: its handler waits for a next request that never comes.
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG)
    idle.request("GET", "/v1/models")
    assert idle.getresponse().read()
    threads, results = _in_flight(port)
    _wait_for(lambda: server.active == 3, "three requests in flight")
    handlers = [t for t in threading.enumerate() if "process_request" in t.name]
    assert len(handlers) == 4  # three in flight, one idle

    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(HANG)
    assert not stopper.is_alive(), "stop() hung with requests in flight"
    for thread in threads:
        thread.join(HANG)
    assert len(results) == 3 and _port_is_free(port)
    # The answers that were waiting end as 503, the stream is cut before [DONE]: never a normal answer.
    assert not any(isinstance(r, tuple) and r[0] == 200 and "[DONE]" in r[1] for r in results)
    assert sorted(e["status"] for e in server.log if e["path"] != "/v1/models") == [200, 503, 503]
    assert [e["fault"] for e in server.log if e["status"] == 200] == ["cut"]  # the stream was cut short
    assert not server.answered()
    assert not [t for t in handlers if t.is_alive()], "a handler thread outlived stop()"
    idle.close()


def test_stop_is_safe_before_start_twice_and_releases_held_requests():
    never_started = ScriptedServer()
    stopper = threading.Thread(target=never_started.stop, daemon=True)
    stopper.start()
    stopper.join(HANG)
    assert not stopper.is_alive(), "stop() before start() waited for a loop that never ran"

    server = ScriptedServer(hold_after=1).start()
    port = int(server.base_url.split(":")[2].split("/")[0])
    results: list = []
    _post(port, _chat("first"), results)  # answered
    held = threading.Thread(target=_post, args=(port, _chat("second"), results), daemon=True)
    held.start()
    _wait_for(lambda: server.held == 1, "the second request held")
    assert len(server.answered()) == 1
    server.stop()
    server.stop()
    held.join(HANG)
    assert [r[0] for r in results] == [200, 503] and _port_is_free(port)


def test_hold_after_answers_exactly_that_many_until_released():
    with ScriptedServer(hold_after=2) as server:
        port = int(server.base_url.split(":")[2].split("/")[0])
        results: list = []
        threads = [threading.Thread(target=_post, args=(port, _chat(f"q{i}"), results), daemon=True)
                   for i in range(4)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: server.held == 2 and len(server.answered()) == 2, "two answered, two held")
        server.release()
        for thread in threads:
            thread.join(HANG)
        assert [r[0] for r in results] == [200] * 4 and len(server.answered()) == 4


def test_a_child_server_that_inherited_sigint_as_ignored_still_stops_on_sigint(tmp_path):
    log = tmp_path / "log.jsonl"
    # What a launch in the background from a non-interactive shell does to the child.
    proc = subprocess.Popen([sys.executable, "-m", "studio.serving.scripted", "--latency", str(FOREVER),
                             "--log", str(log)], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        threads, results = _in_flight(port)
        _wait_for(lambda: _state(port)["active"] == 3, "three requests in flight")
        how = stop_process(proc, signals=(signal.SIGINT, signal.SIGTERM), wait=HANG / 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert how == "SIGINT" and proc.returncode == 0
    for thread in threads:
        thread.join(HANG)
    assert _port_is_free(port)
    entries = [json.loads(x) for x in log.read_text().splitlines()]  # written on the way out
    assert len(entries) == len(results) == 3
    assert sorted(e["status"] for e in entries) == [200, 503, 503] and [e["fault"] for e in entries
                                                                      if e["status"] == 200] == ["cut"]


def _state(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG)
    try:
        conn.request("GET", "/state")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_stop_process_escalates_to_sigkill_and_reaps():
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.stdout.close()
    assert stop_process(proc, wait=0.5) == "SIGKILL"
    assert proc.returncode == -signal.SIGKILL  # reaped: the exit status is known
    assert stop_process(proc) == "exited"  # stopping a finished process is a no-op


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_streaming_answers_add_up_to_the_plain_answer(endpoint):
    from openai import OpenAI

    with ScriptedServer(latency=0.01) as server:
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        if endpoint == "chat":
            messages = [{"role": "user", "content": "tell me about the sea"}]
            plain = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
            chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
        else:
            plain = client.completions.create(model="m", prompt="once upon a time").choices[0].text
            chunks = list(client.completions.create(model="m", prompt="once upon a time", stream=True))
            text = "".join(c.choices[0].text for c in chunks)
    assert text == plain and len(chunks) > 3
    assert chunks[-1].choices[0].finish_reason == "stop"
