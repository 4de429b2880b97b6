"""Bookkeeping of the training loop, kept out of it: phase timings and the progress bar."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm.auto import tqdm


class Timer:
    """Wall seconds per phase: ``with timer("rollout"): ...`` adds to ``timer.metrics()["time/rollout_s"]``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        """``time/<phase>_s`` for every timed phase and ``time/step_s`` since the timer was made."""
        out = {f"time/{k}_s": v for k, v in self.seconds.items()}
        out["time/step_s"] = time.perf_counter() - self.start
        return out


class Progress:
    """The run's tqdm bar (one tick per training step) and the phase shown beside it."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = tqdm(
            total=total, initial=initial, desc="serl", unit="step", dynamic_ncols=True, disable=not enabled
        )

    def phase(self, step: int, what: str) -> None:
        """Show what training step ``step`` (1-based) is doing."""
        self.bar.set_postfix_str(f"step {step}: {what}")

    def episodes(self, step: int, what: str) -> Callable[[int, int], None]:
        """A ``progress(finished, total)`` callback for a rollout or an evaluation of step ``step``."""
        turns = [0]

        def report(finished: int, total: int) -> None:
            turns[0] += 1
            self.phase(step, f"{what} turn {turns[0]}, {finished}/{total} episodes finished")

        return report

    def step_done(self, metrics: dict[str, float]) -> None:
        """Tick the bar and show the step's headline numbers."""
        self.bar.update(1)
        text = (
            f"success {metrics['episode/success_rate']:.2f} valid {metrics['episode/valid_action_ratio']:.2f} "
            f"loss {metrics['actor/loss']:+.4f} λ {metrics['serl/lambda']:.3f}"
        )
        if "eval/success_rate" in metrics:
            text += f" eval success {metrics['eval/success_rate']:.2f}"
        self.bar.set_postfix_str(text)

    def close(self) -> None:
        self.bar.close()
