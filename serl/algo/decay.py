"""Schedules for the SERL mixing coefficient λ. Standard library only.

Every schedule is a callable ``schedule(step) -> λ`` where ``step`` (``u``) is the number of **completed**
training steps: 0 at the first training step (the reference's ``global_step − 1``, docs/reference.md §5.1).
docs/design.md §4 derives λ from this one persisted counter. Every value is in ``[0, λ0]``.

* :class:`LinearDecay` — the reference (§5.1): ``λ0·max(0, 1 − u/K)``; ``K = 0`` means no decay. With the
  reference's λ0=0.5, K=50 and 1-indexed step k (u = k−1): 0.5 at k=1, 0.25 at k=26, 0.01 at k=50, exactly 0
  from k=51 on.
* :class:`ConstantDecay` — ``λ0`` forever.
* :class:`CosineDecay` — ``λ0·0.5·(1 + cos(π·min(u, K)/K))``, exactly 0 from ``K`` on.
* :class:`ExponentialDecay` — ``λ0·0.5^(u/half_life)``; exactly 0 from ``horizon`` on when one is given.
* :class:`StepDecay` — ``λ0·factor^floor(u/step_size)``; exactly 0 from ``horizon`` on when one is given.

Each schedule has ``active(step)`` (λ > 0: the teacher must run this step) and ``zero_from`` (the first
step from which λ is 0 for good, or ``None`` if it never reaches 0), so the driver can skip teacher prompts
and judge calls once the schedule has decayed into plain GRPO (§5.1).

Deviations from the reference: the reference's worker copy returns 0 for λ0 ≤ 0 instead of raising; here
λ0 outside ``[0, 1]`` always raises (λ0 = 0 is allowed and gives λ ≡ 0). The schedules beyond
:class:`LinearDecay` are not in the reference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
import operator

__all__ = [
    "DecaySchedule",
    "LinearDecay",
    "ConstantDecay",
    "CosineDecay",
    "ExponentialDecay",
    "StepDecay",
]


def _check_lambda0(lambda0: float) -> float:
    if isinstance(lambda0, bool) or not isinstance(lambda0, (int, float)) or not (0.0 <= lambda0 <= 1.0):
        raise ValueError(f"lambda0 must be a float in [0, 1], got {lambda0!r}")
    return float(lambda0)


def _check_int(name: str, value: object, minimum: int, hint: str = "") -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        ivalue = operator.index(value)  # accepts int and numpy integers, rejects floats
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}") from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{hint}, got {value!r}")
    return ivalue


def _check_horizon(horizon: object) -> int | None:
    if horizon is None:
        return None
    return _check_int("horizon", horizon, 1, " (or None for no cut-off)")


class DecaySchedule(ABC):
    """Base class: ``__call__(step) -> λ ∈ [0, λ0]``, ``active(step)``, ``zero_from``."""

    lambda0: float

    def __call__(self, step: int) -> float:
        return self._value(_check_int("step", step, 0, " (number of completed training steps)"))

    @abstractmethod
    def _value(self, u: int) -> float:
        """λ at ``u`` completed training steps (``u`` already validated)."""

    @property
    @abstractmethod
    def zero_from(self) -> int | None:
        """First step ``u`` with λ(v) = 0 for every ``v >= u``; ``None`` if λ never reaches 0."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class LinearDecay(DecaySchedule):
    """Reference schedule (docs/reference.md §5.1): ``λ0·max(0, 1 − u/K)``; ``K = 0`` ⇒ constant λ0."""

    def __init__(self, lambda0: float, horizon: int) -> None:
        self.lambda0 = _check_lambda0(lambda0)
        self.horizon = _check_int("horizon", horizon, 0, " (0 = no decay)")

    def _value(self, u: int) -> float:
        if self.horizon == 0:
            return self.lambda0  # §5.1: λ(u) = λ0 if K = 0
        if u >= self.horizon:
            return 0.0  # §5.1: decays to exactly zero
        return self.lambda0 * max(0.0, 1.0 - u / self.horizon)  # §5.1: λ0·max(0, 1 − u/K)

    @property
    def zero_from(self) -> int | None:
        if self.lambda0 == 0.0:
            return 0
        return self.horizon if self.horizon > 0 else None


class ConstantDecay(DecaySchedule):
    """No decay: λ ≡ λ0 (the reference's ``lambda_decay_steps = 0``, §5.1)."""

    def __init__(self, lambda0: float) -> None:
        self.lambda0 = _check_lambda0(lambda0)

    def _value(self, u: int) -> float:
        return self.lambda0

    @property
    def zero_from(self) -> int | None:
        return 0 if self.lambda0 == 0.0 else None


class CosineDecay(DecaySchedule):
    """``λ0·0.5·(1 + cos(π·min(u, K)/K))``, exactly 0 from ``u = K`` on (not in the reference)."""

    def __init__(self, lambda0: float, horizon: int) -> None:
        self.lambda0 = _check_lambda0(lambda0)
        self.horizon = _check_int("horizon", horizon, 1, " (use ConstantDecay for no decay)")

    def _value(self, u: int) -> float:
        if u >= self.horizon:
            return 0.0
        return self.lambda0 * 0.5 * (1.0 + math.cos(math.pi * u / self.horizon))

    @property
    def zero_from(self) -> int | None:
        return 0 if self.lambda0 == 0.0 else self.horizon


class ExponentialDecay(DecaySchedule):
    """``λ0·0.5^(u/half_life)``; exactly 0 from ``horizon`` on when given (not in the reference)."""

    def __init__(self, lambda0: float, half_life: float, horizon: int | None = None) -> None:
        self.lambda0 = _check_lambda0(lambda0)
        if isinstance(half_life, bool) or not isinstance(half_life, (int, float)) or not (
            math.isfinite(half_life) and half_life > 0
        ):
            raise ValueError(f"half_life must be a finite float > 0 (in training steps), got {half_life!r}")
        self.half_life = float(half_life)
        self.horizon = _check_horizon(horizon)

    def _value(self, u: int) -> float:
        if self.horizon is not None and u >= self.horizon:
            return 0.0
        return self.lambda0 * 0.5 ** (u / self.half_life)

    @property
    def zero_from(self) -> int | None:
        return 0 if self.lambda0 == 0.0 else self.horizon


class StepDecay(DecaySchedule):
    """``λ0·factor^floor(u/step_size)``, ``factor ∈ [0, 1]``; exactly 0 from ``horizon`` on when given."""

    def __init__(self, lambda0: float, step_size: int, factor: float, horizon: int | None = None) -> None:
        self.lambda0 = _check_lambda0(lambda0)
        self.step_size = _check_int("step_size", step_size, 1)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (0.0 <= factor <= 1.0):
            raise ValueError(f"factor must be a float in [0, 1], got {factor!r}")
        self.factor = float(factor)
        self.horizon = _check_horizon(horizon)

    def _value(self, u: int) -> float:
        if self.horizon is not None and u >= self.horizon:
            return 0.0
        return self.lambda0 * self.factor ** (u // self.step_size)

    @property
    def zero_from(self) -> int | None:
        if self.lambda0 == 0.0:
            return 0
        candidates = [h for h in (self.horizon, self.step_size if self.factor == 0.0 else None) if h is not None]
        return min(candidates) if candidates else None
