"""A minimal OpenAI-compatible chat server for any serl policy model (self-hosted trajectory judge, §3.6).

SERL's judged feedback (``feedback=judge``, :mod:`serl.feedback.judge`) talks to an OpenAI-compatible
endpoint. vLLM is the natural server on a GPU; this module lets a user self-host a judge anywhere with
nothing but transformers (CPU is fine for SmolLM2-135M), and lets the tests drive the judge over real HTTP
against a real model::

    python scripts/serve_judge.py --model smollm2-135m --port 8000
    python scripts/train.py feedback=judge feedback.model=smollm2-135m

Endpoints (stdlib ``http.server.ThreadingHTTPServer``):

* ``POST /v1/chat/completions`` — body ``{"model", "messages": [{"role", "content"}, …], "temperature",
  "max_tokens", "top_p", "chat_template_kwargs"}``. The messages are rendered with the tokenizer's chat
  template (generation prompt appended, ``chat_template_kwargs`` passed through, e.g. ``enable_thinking``)
  and generated with ``model.generate`` under a lock (one generation at a time): greedy when
  ``temperature`` is 0 (the default), sampling otherwise. ``max_tokens`` is capped at the server's
  ``max_new_tokens``. The ``model`` field is not checked (one model per server); the reply names the
  served model. Reply: ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0,
  "message": {"role": "assistant", "content"}, "finish_reason": "stop" | "length"}], "usage":
  {"prompt_tokens", "completion_tokens", "total_tokens"}}``.
* ``GET /v1/models`` — the served model.
* Anything else: ``404``; a malformed body: ``400``; a generation error: ``500``; errors are JSON
  ``{"error": {"message", "type"}}``.

Server options (:class:`ChatModel`): ``max_new_tokens`` caps every reply; ``min_new_tokens`` (default 0)
forbids end-of-sequence before that many tokens; ``repetition_penalty`` (default 1 = none; the usual
CTRL-style penalty of transformers, prompt tokens included) discourages repeats. Greedy decoding of the
random test model with ``min_new_tokens`` and ``repetition_penalty=1.5`` gives a deterministic, non-empty,
non-whitespace reply (without the penalty it repeats newlines). Special tokens other than end-of-sequence
are never generated (they would vanish from the decoded reply). There is no authentication: bind to loopback
(the default) or put it behind a proxy that checks keys.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serl.policy.models import load_policy, resolve_model_path

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")


class BadRequest(ValueError):
    """The request body is not a valid chat-completion request (HTTP 400)."""


class ChatModel:
    """A causal LM + tokenizer that answers chat messages, one generation at a time."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str,
        max_new_tokens: int = 512,
        min_new_tokens: int = 0,
        repetition_penalty: float = 1.0,
    ):
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0 <= int(min_new_tokens) <= int(max_new_tokens):
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")
        if not float(repetition_penalty) >= 1.0:
            raise ValueError(f"repetition_penalty must be >= 1 (1 = none), got {repetition_penalty}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_new_tokens = int(max_new_tokens)
        self.min_new_tokens = int(min_new_tokens)
        self.repetition_penalty = float(repetition_penalty)
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None} or {tokenizer.eos_token_id}
        self.suppress = sorted(set(tokenizer.all_special_ids) - self.eos_ids)
        self.context_limit = getattr(model.config, "max_position_embeddings", None)
        self.lock = threading.Lock()

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``{"content", "finish_reason", "prompt_tokens", "completion_tokens"}`` for ``messages``."""
        import torch

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, **(chat_template_kwargs or {})
        )
        if hasattr(ids, "keys"):  # transformers >= 5 returns a BatchEncoding
            ids = ids["input_ids"]
        ids = list(ids)
        budget = self.max_new_tokens if max_tokens is None else min(int(max_tokens), self.max_new_tokens)
        if self.context_limit is not None and len(ids) + budget > self.context_limit:
            raise BadRequest(
                f"prompt of {len(ids)} tokens + max_tokens {budget} exceeds the model's context of {self.context_limit}"
            )
        sampling = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature, "top_p": top_p}
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        with self.lock, torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=budget,
                min_new_tokens=min(self.min_new_tokens, budget),
                suppress_tokens=self.suppress or None,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new = out[0, len(ids):].tolist()
        ended = bool(new) and new[-1] in self.eos_ids
        if ended:
            new = new[:-1]
        return {
            "content": self.tokenizer.decode(new, skip_special_tokens=True),
            "finish_reason": "stop" if ended or len(new) < budget else "length",
            "prompt_tokens": len(ids),
            "completion_tokens": len(new) + int(ended),
        }


def load_chat_model(
    model: str = "smollm2-135m",
    max_new_tokens: int = 512,
    min_new_tokens: int = 0,
    repetition_penalty: float = 1.0,
    dtype: str = "float32",
    device: str = "cpu",
) -> ChatModel:
    """A :class:`ChatModel` for a serl model name (``smollm2-135m``, ``tiny``…), an HF folder or a hub id."""
    path = resolve_model_path(model)
    policy, tokenizer = load_policy(path, dtype=dtype)
    return ChatModel(policy.to(device), tokenizer, str(model), max_new_tokens, min_new_tokens, repetition_penalty)


def parse_request(body: bytes) -> dict[str, Any]:
    """Validated ``complete`` keyword arguments from a chat-completion body; :class:`BadRequest` otherwise."""
    try:
        data = json.loads(body or b"")
    except ValueError as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    clean = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"each message needs a role in {ROLES}, got {m!r}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise BadRequest(f"message content must be a string, got {content!r}")
        clean.append({"role": m["role"], "content": content})
    kwargs: dict[str, Any] = {"messages": clean}
    try:
        kwargs["temperature"] = float(data.get("temperature", 0.0))
        kwargs["top_p"] = float(data.get("top_p", 1.0))
        if data.get("max_tokens") is not None:
            kwargs["max_tokens"] = int(data["max_tokens"])
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad sampling parameter: {e}") from None
    if kwargs["temperature"] < 0 or not 0 < kwargs["top_p"] <= 1 or kwargs.get("max_tokens", 1) < 1:
        raise BadRequest("need temperature >= 0, 0 < top_p <= 1 and max_tokens >= 1")
    template_kwargs = data.get("chat_template_kwargs")
    if template_kwargs is not None and not isinstance(template_kwargs, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    kwargs["chat_template_kwargs"] = template_kwargs
    return kwargs


class ChatServer(ThreadingHTTPServer):
    """One thread per connection; a listen backlog deep enough for a judge's burst of concurrent requests
    (the default of 5 makes the kernel drop connections, which clients only retry after a second)."""

    daemon_threads = True
    request_queue_size = 256


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An (unstarted) HTTP server answering for ``chat``; ``port=0`` picks a free port
    (``server.server_address``). Run it with ``serve_forever()``; stop it with ``shutdown()``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, kind: str, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model", "owned_by": "serl"}]})
            else:
                self._error(404, "not_found", f"no route GET {self.path}; try GET /v1/models")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, "not_found", f"no route POST {self.path}; try POST /v1/chat/completions")
                return
            try:
                result = chat.complete(**parse_request(body))
            except BadRequest as e:
                self._error(400, "invalid_request_error", str(e))
                return
            except Exception as e:  # a generation failure must not kill the server
                log.exception("generation failed")
                self._error(500, "server_error", f"{type(e).__name__}: {e}")
                return
            usage = {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"]}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            self._send(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": chat.name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": result["content"]},
                    "finish_reason": result["finish_reason"],
                }],
                "usage": usage,
            })

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.info("%s %s", self.address_string(), format % args)

    return ChatServer((host, port), Handler)
