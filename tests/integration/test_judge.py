"""The trajectory judge over real HTTP (docs/reference.md §3.6): against serl's own OpenAI-compatible server
running the tiny model, and against a test-local stub server for the failure modes, retries, the API key,
the success-reference variant and bounded concurrency.

The real server decodes greedily with ``min_new_tokens`` and a repetition penalty, so the tiny random model's
reply is deterministic and non-empty (without the penalty it would repeat newlines, an empty answer).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf

from serl.build import make
from serl.feedback.judge import REFERENCE_TITLE, JudgeError, TrajectoryJudge, is_non_answer
from serl.policy.serve import ChatServer
from serl.types import Trajectory
from tests.group_fixture import COUNTER, DESK, EXAMINED, ROOM, make_group
from tests.helpers import compose_cfg

SECRET = "sk-test-secret-0123456789"


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("SERL_JUDGE_API_KEY", raising=False)


def _serve(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def other_group(group_id: int = 8) -> list[Trajectory]:
    """make_group() under another group id, with no success (no reference sample available)."""
    group = make_group()
    for t in group:
        t.group_id = group_id
        t.won = False
        for s in t.steps:
            s.reward = 0.0
    return group


# =========================================================================== the real server, tiny model


@pytest.fixture(scope="module")
def real_server():
    from serl.policy.serve import load_chat_model, make_server

    chat = load_chat_model("tiny", max_new_tokens=8, min_new_tokens=8, repetition_penalty=1.5)
    calls = []
    complete = chat.complete

    def counting(**kwargs):
        calls.append(kwargs)
        return complete(**kwargs)

    chat.complete = counting
    server = make_server(chat, "127.0.0.1", 0)
    url = _serve(server)
    yield url, calls
    server.shutdown()
    server.server_close()


def test_judge_against_real_server(real_server):
    url, calls = real_server
    calls.clear()
    judge = TrajectoryJudge(model="tiny", base_url=url, timeout=30)
    group = make_group()
    metrics = judge.prepare([group])

    assert len(calls) == 4  # one request per trajectory
    assert metrics["judge/requests"] == 4 and metrics["judge/retries"] == 0
    assert metrics["judge/failures"] == 0 and metrics["judge/empty_answers"] == 0
    assert metrics["judge/latency_s"] > 0 and metrics["time/judge_s"] >= metrics["judge/latency_s"]
    assert calls[0]["temperature"] == 0.0 and calls[0]["max_tokens"] == 4096
    answers = {judge(group, i, 0) for i in range(4)}
    assert all(a and a.strip() and not is_non_answer(a) for a in answers)
    for i, traj in enumerate(group):
        for t in range(traj.length):  # the same answer on every step of the trajectory
            ctx = judge.context(group, i, t)
            assert ctx.sections == (("Trajectory Judge:", judge(group, i, 0)),) and ctx.sources == ("judge",)


def test_real_server_routes_and_errors(real_server):
    url, _ = real_server
    with urllib.request.urlopen(f"{url}/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == "tiny"

    def post(path: str, body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(f"{url}{path}", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, reply = post("/chat/completions", json.dumps({"messages": [{"role": "user", "content": "go"}], "max_tokens": 3}).encode())
    assert status == 200 and reply["object"] == "chat.completion" and reply["model"] == "tiny"
    assert reply["choices"][0]["message"]["role"] == "assistant" and reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 3
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + 3
    assert post("/nope", b"{}")[0] == 404
    assert post("/chat/completions", b"not json")[0] == 400
    status, reply = post("/chat/completions", b'{"messages": []}')
    assert status == 400 and "messages" in reply["error"]["message"]
    assert post("/chat/completions", b'{"messages": [{"role": "robot", "content": "x"}]}')[0] == 400


# =========================================================================== stub server


class Stub:
    """A loopback chat endpoint whose reply is ``respond(body) -> (status, raw body, delay seconds)``."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[dict] = []  # {"headers", "body"}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                status, raw, delay = stub.respond(body)
                time.sleep(delay)
                with stub.lock:
                    stub.in_flight -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ChatServer(("127.0.0.1", 0), Handler)
        self.url = _serve(self.server)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def answer(content, finish_reason="stop") -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": finish_reason}]}).encode()


OK = "This rollout failed. Take the mug before going to the desk."


@pytest.fixture
def stub():
    made = []

    def start(respond):
        made.append(Stub(respond))
        return made[-1]

    yield start
    for s in made:
        s.close()


def test_timeout_is_retried_then_counted(stub):
    s = stub(lambda body: (200, answer(OK), 1.0))
    judge = TrajectoryJudge(model="m", base_url=s.url, timeout=0.2, retries=2)
    group = make_group()[:1]
    metrics = judge.prepare([group])
    assert len(s.requests) == 3  # retries + 1 attempts
    assert metrics["judge/failures"] == 1 and metrics["judge/retries"] == 2
    assert judge(group, 0, 0) is None and not judge.context(group, 0, 0).has_context
    with pytest.raises(JudgeError, match="timed out"):
        TrajectoryJudge(model="m", base_url=s.url, timeout=0.2, retries=0, strict=True).prepare([group])


@pytest.mark.parametrize(
    "status, raw, kind, attempts",
    [
        (200, b"<html>not json</html>", "failures", 1),
        (200, b'{"object": "chat.completion"}', "failures", 1),  # no choices
        (200, answer(None), "empty_answers", 1),
        (200, answer("  N/A. "), "empty_answers", 1),
        (200, answer("No comment!"), "empty_answers", 1),
        (500, b'{"error": "boom"}', "failures", 3),  # 5xx is retried
        (404, b'{"error": "no such model"}', "failures", 1),  # 4xx is not
    ],
)
def test_bad_replies_give_no_context(stub, status, raw, kind, attempts):
    s = stub(lambda body: (status, raw, 0.0))
    group = make_group()[:1]
    judge = TrajectoryJudge(model="m", base_url=s.url, retries=2)
    metrics = judge.prepare([group])
    assert metrics[f"judge/{kind}"] == 1 and metrics["judge/requests"] == 1
    assert len(s.requests) == attempts
    assert all(judge(group, 0, t) is None for t in range(group[0].length))
    with pytest.raises(JudgeError, match="strict"):
        TrajectoryJudge(model="m", base_url=s.url, retries=0, strict=True).prepare([group])


def test_connection_refused_is_a_failure():
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens there any more
    judge = TrajectoryJudge(model="m", base_url=f"http://127.0.0.1:{port}/v1", retries=1)
    metrics = judge.prepare([make_group()[:2]])
    assert metrics["judge/failures"] == 2 and metrics["judge/retries"] == 2


def test_empty_answer_cut_by_length_is_asked_again_with_twice_the_budget(stub):
    s = stub(lambda body: (200, answer("", "length") if body["max_tokens"] == 64 else answer(f"<think>ok</think> {OK}"), 0.0))
    group = make_group()[:1]
    judge = TrajectoryJudge(model="m", base_url=s.url, max_tokens=64)
    metrics = judge.prepare([group])
    assert [r["body"]["max_tokens"] for r in s.requests] == [64, 128]
    assert judge(group, 0, 2) == OK  # think block removed
    assert metrics["judge/empty_answers"] == 0 and metrics["judge/retries"] == 1


def test_request_body_and_answers_replace_previous_step(stub):
    s = stub(lambda body: (200, answer(OK), 0.0))
    group = make_group()
    judge = TrajectoryJudge(model="judge-model", base_url=s.url + "/", temperature=0.3, max_tokens=99)
    judge.prepare([group])
    assert {r["path"] for r in s.requests} == {"/v1/chat/completions"}
    body = s.requests[0]["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.3 and body["max_tokens"] == 99
    assert "chat_template_kwargs" not in body and "Authorization" not in s.requests[0]["headers"]
    assert judge(group, 2, 1) == OK

    s.respond = lambda body: (500, b"down", 0.0)
    judge.prepare([group])  # the next training step: the judge is down
    assert judge(group, 2, 1) is None

    thinking = TrajectoryJudge(model="m", base_url=s.url, enable_thinking=True, retries=0)
    thinking.prepare([group[:1]])
    assert s.requests[-1]["body"]["chat_template_kwargs"] == {"enable_thinking": True}


def test_user_message_contents():
    judge = TrajectoryJudge(model="m")
    group = make_group()
    system, user = judge.messages(group, 1)
    assert system["role"] == "system" and "critic" in system["content"]
    text = user["content"]
    assert text.startswith(f"Task:\nPROMPT[{ROOM}]")
    assert "Step 2\nResponse:\n<action>take mug 1 from countertop 1</action>" in text
    assert "I reason about it" not in text  # thinking removed (§3.2)
    assert "Final success: No\nEpisode reward: 0.0000\nEpisode length: 4\n" in text
    assert f"Final observation after the last action:\n{DESK}" in text
    assert "This rollout succeeded." in text and "This rollout failed." in text
    assert REFERENCE_TITLE not in text
    # traj 3's last env response is blank: the final observation is the last non-empty one
    assert f"Final observation after the last action:\n{EXAMINED}" in judge.messages(group, 3)[1]["content"]
    won = judge.messages(group, 0)[1]["content"]
    assert "Final success: Yes\nEpisode reward: 10.0000\nEpisode length: 4" in won
    plain = TrajectoryJudge(model="m", include_feedback=False, format="observation_action", max_steps=1)
    text = plain.messages(group, 1)[1]["content"]
    assert "Final observation" not in text and f"Observation:\nPROMPT[{ROOM}]" in text
    assert "... 3 more steps omitted." in text and f"PROMPT[{COUNTER}]" not in text


def test_success_reference_is_sent(stub):
    s = stub(lambda body: (200, answer(OK), 0.0))
    group, failed = make_group(), other_group()
    judge = TrajectoryJudge(model="m", base_url=s.url, with_success_reference=True)
    judge.prepare([group, failed])
    users = [r["body"]["messages"][1]["content"] for r in s.requests]
    assert len(users) == 8
    with_ref = [u for u in users if REFERENCE_TITLE in u]
    assert len(with_ref) == 4  # every trajectory of the group with a success, none of the other group
    for u in with_ref:
        ref = u.split(REFERENCE_TITLE, 1)[1]
        assert "<action>move mug 1 to desk 1</action>" in ref and "Final success: Yes" in ref
    # the winner itself: no other success, so it is its own reference
    own = judge.messages(group, 0)[1]["content"]
    assert own.split(REFERENCE_TITLE, 1)[1].count("move mug 1 to desk 1") == 1


def test_api_key_from_env_is_sent_but_never_stored(stub, monkeypatch, tmp_path):
    monkeypatch.setenv("SERL_JUDGE_API_KEY", SECRET)
    s = stub(lambda body: (200, answer(OK), 0.0))
    cfg = compose_cfg(["feedback=judge", f"feedback.base_url={s.url}"])
    judge = make(cfg.feedback)
    judge.prepare([make_group()[:1]])
    assert s.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)
    assert SECRET not in (tmp_path / "config.yaml").read_text()
    assert SECRET not in repr(judge) and SECRET not in repr(vars(judge))

    monkeypatch.setenv("MY_JUDGE_KEY", "other-key")
    TrajectoryJudge(model="m", base_url=s.url, api_key_env="MY_JUDGE_KEY").prepare([make_group()[:1]])
    assert s.requests[-1]["headers"]["Authorization"] == "Bearer other-key"


def test_judge_success_option_composes():
    cfg = compose_cfg(["feedback=judge_success"])
    judge = make(cfg.feedback)
    assert cfg.feedback.name == "judge_success" and cfg.feedback.timeout == 180
    assert isinstance(judge, TrajectoryJudge) and judge.with_success_reference and judge.max_concurrency == 32


def test_max_concurrency_bounds_requests_in_flight(stub):
    s = stub(lambda body: (200, answer(OK), 0.15))
    judge = TrajectoryJudge(model="m", base_url=s.url, max_concurrency=2)
    metrics = judge.prepare([make_group(), other_group()])
    assert metrics["judge/requests"] == 8 and len(s.requests) == 8
    assert s.max_in_flight == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": ""}, "model"),
        ({"base_url": "localhost:8000/v1"}, "http://"),
        ({"api_key_env": "sk-abc def"}, "environment variable name"),
        ({"timeout": 0}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"temperature": -0.1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"format": "xml"}, "allowed: response, observation_action"),
        ({"max_steps": -2}, "max_steps"),
        ({"strict": "yes"}, "true or false"),
    ],
)
def test_bad_knobs_fail_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrajectoryJudge(**{"model": "m", **kwargs})


def test_non_answers():
    for text in (None, "", "  ", "None", "N/A", "na.", "No comment.", "NO JUDGMENT", "no judge!"):
        assert is_non_answer(text)
    assert not is_non_answer("This rollout failed. None of the actions helped.")
