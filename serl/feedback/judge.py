"""Trajectory judge: an LLM critic's hindsight verdict on the whole rollout (docs/reference.md §3.6, §3.2, §3.3).

The reference's ``judge_current_traj`` (and, with ``with_success_reference=True``,
``judge_current_traj_on_successful_sample``). Once per training step, :meth:`TrajectoryJudge.prepare` sends
**one OpenAI-compatible chat request per trajectory** (``POST {base_url}/chat/completions``, body
``model`` / ``messages`` / ``temperature`` / ``max_tokens``) through a thread pool of ``max_concurrency``
workers, and keeps each answer for that step, keyed by ``(group_id, traj_id)``. Every step of a trajectory
then gets the same section ``Trajectory Judge:\\n<answer>`` (``per_candidate = False``: under anchor insertion
it is appended after the candidate table for the step itself, §4.3).

The request (wording is serl's, the intent the reference's):

* system: an expert rollout critic that writes a concise *Trajectory Judge*; the first sentence states
  success or failure, the last gives the most actionable lesson;
* user: the task (the step-0 student prompt), the trajectory (:func:`~serl.feedback.render.render_steps` in
  ``format``, first ``max_steps`` steps), the outcome summary ``Final success: Yes/No``,
  ``Episode reward: x.xxxx``, ``Episode length: n`` and, with ``include_feedback``,
  ``Final observation after the last action:`` (the last non-empty raw env response of the trajectory);
  with ``with_success_reference``, ``Successful reference sample from the same task:`` = the first *other*
  won trajectory of the group, else the trajectory itself when it won, else nothing (its text + outcome
  summary); then the instruction to answer in 2–4 plain sentences starting with "This rollout succeeded." /
  "This rollout failed." and ending with the most actionable lesson.

No context for a trajectory (counted in the metrics; ``strict=True`` raises :class:`JudgeError` instead)
when the request fails (timeout or connection error after ``retries`` retries, HTTP error), the body is not
JSON or has no ``choices[0].message``, or the answer is empty or a non-answer ("none", "n/a", "na",
"no comment", "no judgment", "no judge"; case-insensitive, punctuation ignored). As in the reference, an empty
answer cut by the length limit (``finish_reason == "length"``, a reasoning model that spent its budget
thinking) is asked once more with twice ``max_tokens``.

The API key is read at request time from the environment variable named by ``api_key_env`` and sent as
``Authorization: Bearer …`` only when set; it is never stored on the object, so it appears in no config,
``repr`` or log. ``serl.policy.serve`` (``scripts/serve_judge.py``) self-hosts a compatible endpoint for any
serl model.

Metrics of :meth:`~TrajectoryJudge.prepare`: ``judge/requests`` (trajectories sent), ``judge/failures``
(transport/HTTP/parse failures), ``judge/empty_answers`` (empty or non-answers), ``judge/retries`` (extra
attempts), ``judge/latency_s`` (mean per trajectory, retries included), ``time/judge_s`` (wall time).

Deviations from the reference:

* §10.16 fixed: serl's rollout records only the steps an episode actually played, so the judge never sees
  post-termination "ghost" steps and the final observation comes from a real step. The judge runs only
  from the trainer's teacher path (never during validation/evaluation, never after λ has decayed to 0).
* Success is ``Trajectory.won`` (the env's verdict), not episode reward ≥ ``success_reward_threshold``.
* One final-observation line: the last non-empty raw env response (serl's next-step prompt is that
  response wrapped in the student template, so the reference's separate next-observation line adds no
  information).
* Retries cover connection errors and HTTP 5xx as well as timeouts (the reference retries timeouts only).
* ``<think>…</think>`` blocks left in the answer (thinking judges without a reasoning parser) are removed.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from typing import Sequence

from serl.algo.masks import remove_thinking
from serl.feedback.base import FeedbackSource, clean
from serl.feedback.render import check_max_steps, normalize_format, render_steps
from serl.types import Trajectory

SYSTEM_PROMPT = (
    "You are an expert rollout critic for a text-based agent. Given the agent's task, the actions it took "
    "and the outcome, write a concise Trajectory Judge: the first sentence must state whether the rollout "
    "succeeded or failed, and the last sentence must give the single most actionable lesson for solving "
    "this task."
)
INSTRUCTION = (
    "Write the Trajectory Judge in 2-4 plain sentences (no lists, no headings). Start with exactly "
    '"This rollout succeeded." or "This rollout failed." and end with the most actionable lesson.'
)
REFERENCE_TITLE = "Successful reference sample from the same task:"
#: Answers that mean "no judgment" (compared lower-cased with punctuation removed).
NON_ANSWERS = frozenset({"none", "na", "no comment", "no judgment", "no judge"})
DEFAULT_API_KEY_ENV = "SERL_JUDGE_API_KEY"

_PUNCT = re.compile(r"[^\w\s]")


class JudgeError(RuntimeError):
    """A judge request gave no usable answer and ``strict=True``."""


def is_non_answer(text: str | None) -> bool:
    """Whether ``text`` is empty or one of :data:`NON_ANSWERS` (case and punctuation ignored)."""
    if text is None:
        return True
    key = " ".join(_PUNCT.sub("", text).lower().split())
    return key == "" or key in NON_ANSWERS


def outcome_summary(traj: Trajectory, include_feedback: bool) -> str:
    """``Final success`` / ``Episode reward`` / ``Episode length`` lines (+ the final observation)."""
    lines = [
        f"Final success: {'Yes' if traj.won else 'No'}",
        f"Episode reward: {traj.episode_reward:.4f}",
        f"Episode length: {traj.length}",
    ]
    if include_feedback:
        final = next((f for f in (clean(s.feedback) for s in reversed(traj.steps)) if f), None)
        if final is not None:
            lines.append(f"Final observation after the last action:\n{final}")
    return "\n".join(lines)


def success_reference(group: Sequence[Trajectory], traj_idx: int) -> Trajectory | None:
    """First *other* won trajectory of the group, else the trajectory itself if it won, else ``None``."""
    for j, other in enumerate(group):
        if j != traj_idx and other.won:
            return other
    return group[traj_idx] if group[traj_idx].won else None


class _Failure(Exception):
    """One trajectory's request gave no answer; ``kind`` is ``"failure"`` or ``"empty"``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class TrajectoryJudge(FeedbackSource):
    """One judge answer per trajectory, fetched from an OpenAI-compatible endpoint (module docstring)."""

    name = "judge"
    title = "Trajectory Judge:"
    per_candidate = False

    def __init__(
        self,
        model: str,
        base_url: str = "http://localhost:8000/v1",
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout: float = 180.0,
        retries: int = 2,
        max_concurrency: int = 32,
        temperature: float = 0.0,
        max_tokens: int = 4096,
        format: str = "response",
        max_steps: int = 0,
        include_feedback: bool = True,
        with_success_reference: bool = False,
        strict: bool = False,
        enable_thinking: bool = False,
    ):
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be the judge's model name on the endpoint (non-empty), got {model!r}")
        base_url = str(base_url).strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not isinstance(api_key_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise ValueError(f"api_key_env must be an environment variable name (e.g. {DEFAULT_API_KEY_ENV}), got {api_key_env!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if int(retries) < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if int(max_concurrency) < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not float(temperature) >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        for key, value in (("include_feedback", include_feedback), ("with_success_reference", with_success_reference),
                           ("strict", strict), ("enable_thinking", enable_thinking)):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        self.model = model.strip()
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_concurrency = int(max_concurrency)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.format = normalize_format(format)
        self.max_steps = check_max_steps(max_steps)
        self.include_feedback = include_feedback
        self.with_success_reference = with_success_reference
        self.strict = strict
        self.enable_thinking = enable_thinking
        self.answers: dict[tuple[int, int], str] = {}  # (group_id, traj_id) -> answer, for the current step

    # ------------------------------------------------------------------ FeedbackSource

    def content(self, group: Sequence[Trajectory], traj_idx: int, step_idx: int) -> str | None:
        traj = group[traj_idx]
        return self.answers.get((traj.group_id, traj.traj_id))

    def prepare(self, groups: Sequence[Sequence[Trajectory]]) -> dict[str, float]:
        """Judge every trajectory of ``groups`` (one request each); answers replace the previous step's."""
        t0 = time.perf_counter()
        jobs = [(t.group_id, t.traj_id, self.messages(g, i)) for g in groups for i, t in enumerate(g)]
        self.answers = {}
        results = []
        if jobs:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
                results = list(pool.map(lambda job: self._judge(job[2]), jobs))
        counts = {"failure": 0, "empty": 0}
        retries, latency = 0, 0.0
        errors = []
        for (group_id, traj_id, _), (answer, error, attempts, seconds) in zip(jobs, results):
            retries += attempts - 1
            latency += seconds
            if error is None:
                self.answers[(group_id, traj_id)] = answer
            else:
                counts[error.kind] += 1
                errors.append(f"group {group_id} trajectory {traj_id}: {error}")
        if self.strict and errors:
            raise JudgeError(f"{len(errors)} of {len(jobs)} judge requests gave no answer (strict=True): " + "; ".join(errors))
        return {
            "judge/requests": float(len(jobs)),
            "judge/failures": float(counts["failure"]),
            "judge/empty_answers": float(counts["empty"]),
            "judge/retries": float(retries),
            "judge/latency_s": latency / len(jobs) if jobs else 0.0,
            "time/judge_s": time.perf_counter() - t0,
        }

    # ------------------------------------------------------------------ request text

    def trajectory_block(self, traj: Trajectory) -> str:
        """Rendered steps + outcome summary of one trajectory."""
        steps = render_steps(traj.steps, self.format, self.max_steps)
        return f"{steps}\n\nOutcome:\n{outcome_summary(traj, self.include_feedback)}"

    def messages(self, group: Sequence[Trajectory], traj_idx: int) -> list[dict[str, str]]:
        """The chat messages judging ``group[traj_idx]`` (module docstring)."""
        traj = group[traj_idx]
        task = traj.steps[0].prompt if traj.steps else traj.task
        parts = [f"Task:\n{task}", f"Current trajectory:\n{self.trajectory_block(traj)}"]
        if self.with_success_reference:
            ref = success_reference(group, traj_idx)
            if ref is not None:
                parts.append(f"{REFERENCE_TITLE}\n{self.trajectory_block(ref)}")
        parts.append(INSTRUCTION)
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]

    # ------------------------------------------------------------------ HTTP

    def _judge(self, messages: list[dict[str, str]]) -> tuple[str | None, _Failure | None, int, float]:
        """``(answer, error, attempts, seconds)`` for one trajectory."""
        t0 = time.perf_counter()
        attempts = [0]
        try:
            answer, finish = _parse(self._post(messages, self.max_tokens, attempts))
            if is_non_answer(answer) and finish == "length":  # the budget went to reasoning: once more, doubled
                answer, _ = _parse(self._post(messages, 2 * self.max_tokens, attempts))
            if is_non_answer(answer):
                raise _Failure("empty", f"no judgment in the answer {answer!r}")
            return answer, None, attempts[0], time.perf_counter() - t0
        except _Failure as e:
            return None, e, attempts[0], time.perf_counter() - t0

    def _post(self, messages: list[dict[str, str]], max_tokens: int, attempts: list[int]) -> bytes:
        """POST the chat request and return the body, retrying timeouts / connection errors / HTTP 5xx.

        ``attempts[0]`` counts the HTTP attempts; :class:`_Failure` when no attempt succeeded.
        """
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": max_tokens}
        if self.enable_thinking:
            payload["chat_template_kwargs"] = {"enable_thinking": True}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode("utf-8")
        url = f"{self.base_url}/chat/completions"
        for _ in range(self.retries + 1):
            attempts[0] += 1
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code} from {url}: {_error_text(e)}"
                if e.code < 500:
                    raise _Failure("failure", error) from None
            except (OSError, HTTPException) as e:  # timeouts, refused/reset connections, truncated responses
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                if isinstance(reason, TimeoutError):
                    error = f"timed out after {self.timeout:g} s"
                else:
                    error = f"connection error to {url}: {reason}"
        raise _Failure("failure", f"{error} (after {self.retries + 1} attempts)")

    def __repr__(self) -> str:
        knobs = (
            f"model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"with_success_reference={self.with_success_reference}, format={self.format!r}"
        )
        return f"{type(self).__name__}({knobs})"


def _parse(body: bytes) -> tuple[str | None, str | None]:
    """``(answer, finish_reason)`` of a chat-completion body; :class:`_Failure` when it has no message."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise _Failure("failure", f"malformed chat-completion response ({type(e).__name__}: {e}): {body[:200]!r}") from None
    if content is not None and not isinstance(content, str):
        raise _Failure("failure", f"message content is not a string: {content!r}")
    answer = clean(remove_thinking(content)) if content is not None else None
    return answer, choice.get("finish_reason")


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return error.read(300).decode("utf-8", "replace").strip() or error.reason
    except OSError:
        return str(error.reason)
