"""The hindsight teacher: a hard-synced copy of the policy that re-scores the student's own tokens.

docs/reference.md §2 and §3.2:

* the teacher is a copy of the policy, never trained by gradients, overwritten with the policy's weights
  every ``sync_interval`` training steps (hard copy, no EMA). With ``u`` completed steps, the teacher used at
  step ``u`` is the policy after ``sync_interval · floor(u / sync_interval)`` updates. It is held as a
  snapshot of the policy's *trainable* tensors only, scored by swapping them into the policy for the no-grad
  forward (docs/design.md §5 "LoRA RL"): with a LoRA policy the teacher is the same base with an older adapter (a few
  MB, no second model); with full fine-tuning the snapshot is every parameter, as a copy would be;
* teacher prompt = the student's user message with the privileged sections added by
  ``privileged_template`` (default ``"{prompt}\\n\\n{privileged_context}\\n\\nCorrectly solve the current
  task.\\n"``), chat-templated with the generation prompt;
* it scores exactly the student's sampled response ids in one no-grad forward at the rollout temperature,
  ``log π_T(y_t | x̃, y_<t)``.

Deliberate deviations from the reference (docs/design.md §4):

* scores are computed once per training step, before the update (the teacher is fixed within a step), not
  inside every PPO micro-batch (§10.7); rows without context are not forwarded at all;
* rows are scored in micro-batches of ``micro_batch_size`` rows of similar length (longest first); under
  ``torchrun`` the micro-batches are dealt round-robin to the ranks (:mod:`serl.distributed`) and the
  log-probs gathered, so every rank ends with the single-process scores;
* an over-long teacher prompt is shortened by cutting the middle of the privileged context, never the
  closing instruction or the chat template's assistant header (the reference truncates from the right,
  §10.8). A context that cannot fit at all is dropped (the row gets no reweighting) and counted.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

import torch

from serl.distributed import SINGLE, Dist
from serl.knobs import Count, PositiveFloat, PrivilegedTemplate, check_privileged_template
from serl.policy.logprobs import pad_prompt_response, response_logprobs
from serl.policy.models import chat_prompt_ids, match_trainable, trainable_parameters
from serl.types import TeacherContext

TRUNCATION_MARKER = "\n[... middle of the privileged context omitted ...]\n"


class TeacherScores(NamedTuple):
    """What :meth:`TeacherScorer.score` returns."""

    logprobs: torch.Tensor  # [N, n_response] teacher log-probs of the response tokens (0 where not scored)
    has_context: torch.Tensor  # [N] bool: the row was scored with a privileged context
    truncated: int  # prompts shortened middle-out to fit max_prompt_tokens (§10.8)
    dropped: int  # contexts that could not fit at all (their rows stay plain GRPO)


class TeacherScorer:
    """Built from the ``teacher`` node of conf/train.yaml (``_partial_``, completed with the policy and its
    tokenizer by serl.build); the hints are the knobs' rules, checked before any model loads (:mod:`serl.knobs`)."""

    def __init__(
        self,
        policy: torch.nn.Module,
        tokenizer,
        sync_interval: Count = 10,
        max_prompt_tokens: Count = 4096,
        privileged_template: PrivilegedTemplate = "{prompt}\n\n{privileged_context}\n\nCorrectly solve the current task.\n",
        temperature: PositiveFloat = 1.0,
        micro_batch_size: Count = 4,
        dist: Dist = SINGLE,
    ):
        check_privileged_template(privileged_template)  # the hint's rule, for Python callers too
        self.policy = policy
        self.snapshot: dict[str, torch.Tensor] = {}  # trainable name -> the teacher's value (no grad)
        self.load_state_dict({k: p.detach() for k, p in trainable_parameters(policy).items()})
        self.tokenizer = tokenizer
        self.sync_interval = sync_interval
        self.max_prompt_tokens = max_prompt_tokens
        self.template = privileged_template
        self.temperature = temperature
        self.micro_batch_size = micro_batch_size
        self.dist = dist  # the ranks the scoring micro-batches are dealt to
        self.truncated = 0  # prompts shortened middle-out since the counter was last reset (by score())
        self.dropped = 0  # contexts that could not fit at all, likewise

    # ----------------------------------------------------------------------------------------- sync
    def maybe_sync(self, policy: torch.nn.Module, completed_steps: int) -> bool:
        """Hard-copy the policy into the teacher when ``completed_steps % sync_interval == 0`` (§2)."""
        if completed_steps % self.sync_interval != 0:
            return False
        self.load_state_dict({k: p.detach() for k, p in trainable_parameters(policy).items()})
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's values of the policy's trainable tensors (clones)."""
        return {k: v.clone() for k, v in self.snapshot.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Set the snapshot; ``state`` must hold exactly the policy's trainable tensor names and shapes."""
        params = match_trainable(self.policy, state, "teacher state (a different model or LoRA setting?)")
        self.snapshot = {k: state[k].detach().to(p.device, p.dtype, copy=True) for k, p in params.items()}

    @contextmanager
    def _as_teacher(self) -> Iterator[torch.nn.Module]:
        """The policy with the snapshot swapped in (eval mode, no grad); its own values are put back after."""
        params = trainable_parameters(self.policy)
        own = {k: p.detach().clone() for k, p in params.items()}
        was_training = self.policy.training
        try:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(self.snapshot[k])
            self.policy.eval()
            with torch.no_grad():
                yield self.policy
        finally:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(own[k])
            self.policy.train(was_training)

    # --------------------------------------------------------------------------------------- prompts
    def _render(self, student_prompt: str, context_text: str) -> list[int]:
        user = self.template.format(prompt=student_prompt, privileged_context=context_text)
        return chat_prompt_ids(self.tokenizer, user)  # the student's chat format (§2)

    def prompt_ids(self, student_prompt: str, context: TeacherContext) -> list[int] | None:
        """Chat-templated teacher prompt ids, or None if the context cannot fit in ``max_prompt_tokens``."""
        text = context.text
        ids = self._render(student_prompt, text)
        if len(ids) <= self.max_prompt_tokens:
            return ids
        # Middle-out truncation of the privileged context only (docs/design.md §4, fixes §10.8).
        ctx_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        overflow = len(ids) - self.max_prompt_tokens
        marker = len(self.tokenizer(TRUNCATION_MARKER, add_special_tokens=False)["input_ids"])
        for slack in (0, 8, 32, 128):  # re-tokenisation at the cut may merge/split a few tokens
            keep = len(ctx_ids) - overflow - marker - slack
            if keep <= 0:
                break
            head, tail = keep // 2, keep - keep // 2
            cut = (
                self.tokenizer.decode(ctx_ids[:head])
                + TRUNCATION_MARKER
                + self.tokenizer.decode(ctx_ids[len(ctx_ids) - tail :])
            )
            ids = self._render(student_prompt, cut)
            if len(ids) <= self.max_prompt_tokens:
                self.truncated += 1
                return ids
        self.dropped += 1
        return None

    # --------------------------------------------------------------------------------------- scoring
    def score(
        self,
        student_prompts: Sequence[str],
        contexts: Sequence[TeacherContext],
        response_ids: Sequence[Sequence[int]],
        n_response: int,
    ) -> TeacherScores:
        """Teacher log-probs of the student's response tokens.

        Returns :class:`TeacherScores`: ``logprobs [N, n_response]``, ``has_context [N]`` bool (rows without
        a (fitting) context are not forwarded and hold zeros) and this call's ``truncated`` / ``dropped``
        prompt counts.
        """
        self.truncated = self.dropped = 0
        n = len(student_prompts)
        out = torch.zeros(n, n_response)
        has = torch.zeros(n, dtype=torch.bool)
        rows, prompts, responses = [], [], []
        for i, (prompt, ctx, resp) in enumerate(zip(student_prompts, contexts, response_ids)):
            if not ctx.has_context:
                continue
            ids = self.prompt_ids(prompt, ctx)
            if ids is None:
                continue
            rows.append(i)
            prompts.append(ids)
            responses.append(list(resp))
        if not rows:
            return TeacherScores(out, has, self.truncated, self.dropped)
        # Longest first, so each micro-batch holds similar lengths and carries little padding.
        order = sorted(range(len(rows)), key=lambda j: -(len(prompts[j]) + len(responses[j])))
        chunks = [order[c : c + self.micro_batch_size] for c in range(0, len(order), self.micro_batch_size)]
        scored: list[tuple[int, list[float]]] = []  # (row, log-probs of its response tokens)
        with self._as_teacher() as model:
            for c in self.dist.deal(len(chunks)):  # every chunk, in order, in a single process
                chunk = chunks[0 if c is None else c]  # None: a dummy forward keeping the FSDP ranks in step
                logp = self._forward(model, [prompts[j] for j in chunk], [responses[j] for j in chunk])
                if c is not None:
                    scored += [(rows[j], logp[k, : len(responses[j])].tolist()) for k, j in enumerate(chunk)]
        for i, lp in self.dist.gather(scored):
            out[i, : len(lp)] = torch.tensor(lp)
            has[i] = True
        return TeacherScores(out, has, self.truncated, self.dropped)

    def _forward(self, model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """Teacher log-probs ``[n, max response length]`` of one micro-batch (float32, CPU)."""
        input_ids, attention_mask, _ = pad_prompt_response(prompts, responses, self.tokenizer.pad_token_id)
        device = next(model.parameters()).device
        logp = response_logprobs(
            model,
            input_ids.to(device),
            attention_mask.to(device),
            n_response=input_ids.shape[1] - max(len(p) for p in prompts),
            temperature=self.temperature,
            micro_batch_size=len(prompts),
        )
        return logp.float().cpu()
