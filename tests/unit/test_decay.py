"""serl.algo.decay: the reference λ values (docs/reference.md §5.1) and hand values of every schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serl.algo.decay import ConstantDecay, CosineDecay, ExponentialDecay, LinearDecay, StepDecay


def test_reference_linear_values():
    lam = LinearDecay(0.5, 50)
    # 1-indexed training step k ⇒ u = k − 1
    assert lam(1 - 1) == 0.5
    assert lam(26 - 1) == 0.25
    assert lam(50 - 1) == pytest.approx(0.01, abs=1e-12)
    assert lam(51 - 1) == 0.0
    assert lam(1000) == 0.0
    assert (lam(49) > 0) and not (lam(50) > 0)
    assert lam.zero_from == 50


def test_linear_hand_values_and_no_decay():
    lam = LinearDecay(0.8, 4)
    assert [lam(u) for u in range(6)] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0, 0.0])
    const = LinearDecay(0.3, 0)  # K = 0: no decay
    assert const(0) == const(10_000) == 0.3
    assert const.zero_from is None and (const(10_000) > 0)
    zero = LinearDecay(0.0, 50)
    assert zero(0) == 0.0 and not (zero(0) > 0) and zero.zero_from == 0


def test_constant():
    lam = ConstantDecay(0.5)
    assert lam(0) == lam(123) == 0.5
    assert (lam(123) > 0) and lam.zero_from is None
    assert ConstantDecay(0.0).zero_from == 0 and not (ConstantDecay(0.0)(0) > 0)


def test_cosine_hand_values():
    lam = CosineDecay(0.5, 4)
    c = math.cos(math.pi / 4)
    expected = [0.5, 0.25 * (1 + c), 0.25, 0.25 * (1 - c), 0.0, 0.0]
    assert [lam(u) for u in range(6)] == pytest.approx(expected)
    assert lam(4) == 0.0 and lam(100) == 0.0
    assert (lam(3) > 0) and not (lam(4) > 0) and lam.zero_from == 4


def test_exponential_hand_values():
    lam = ExponentialDecay(0.4, half_life=2.0)
    assert lam(0) == 0.4
    assert lam(1) == pytest.approx(0.4 / math.sqrt(2))
    assert lam(2) == pytest.approx(0.2)
    assert lam(4) == pytest.approx(0.1)
    assert lam.zero_from is None and (lam(40) > 0)
    cut = ExponentialDecay(0.4, half_life=2.0, horizon=5)
    assert cut(4) == pytest.approx(0.1) and cut(5) == 0.0 and cut(6) == 0.0
    assert cut.zero_from == 5 and not (cut(5) > 0)


def test_step_hand_values():
    lam = StepDecay(0.5, step_size=10, factor=0.5)
    assert lam(0) == lam(9) == 0.5
    assert lam(10) == lam(19) == 0.25
    assert lam(25) == 0.125
    assert lam.zero_from is None
    cut = StepDecay(0.5, step_size=10, factor=0.5, horizon=30)
    assert cut(29) == 0.125 and cut(30) == 0.0 and cut.zero_from == 30
    drop = StepDecay(0.5, step_size=3, factor=0.0, horizon=30)  # factor 0: λ0 then 0 from step_size on
    assert drop(2) == 0.5 and drop(3) == 0.0 and drop.zero_from == 3


@pytest.mark.parametrize(
    "schedule",
    [
        LinearDecay(0.5, 50),
        ConstantDecay(0.5),
        CosineDecay(0.5, 50),
        ExponentialDecay(0.5, 7.5, horizon=60),
        StepDecay(0.5, 5, 0.7, horizon=60),
    ],
)
def test_values_in_range_monotone_and_consistent(schedule):
    values = [schedule(u) for u in range(120)]
    assert all(0.0 <= v <= schedule.lambda0 for v in values)
    assert all(a >= b for a, b in zip(values, values[1:]))
    if schedule.zero_from is not None:
        assert all(v == 0.0 for v in values[schedule.zero_from :])
        assert values[schedule.zero_from - 1] > 0
    assert schedule(np.int64(3)) == schedule(3)
    assert type(schedule).__name__ in repr(schedule)


@pytest.mark.parametrize("lambda0", [-0.1, 1.01, float("nan"), "0.5"])
def test_bad_lambda0(lambda0):
    for make in (
        lambda: LinearDecay(lambda0, 50),
        lambda: ConstantDecay(lambda0),
        lambda: CosineDecay(lambda0, 50),
        lambda: ExponentialDecay(lambda0, 10.0),
        lambda: StepDecay(lambda0, 10, 0.5),
    ):
        with pytest.raises(ValueError, match=r"lambda0 must be a float in \[0, 1\]"):
            make()


def test_bad_horizons_and_rates():
    with pytest.raises(ValueError, match="horizon must be an integer >= 0"):
        LinearDecay(0.5, -1)
    with pytest.raises(ValueError, match="horizon must be an integer >= 0"):
        LinearDecay(0.5, 2.5)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        CosineDecay(0.5, 0)
    with pytest.raises(ValueError, match="half_life must be a finite float > 0"):
        ExponentialDecay(0.5, 0.0)
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        ExponentialDecay(0.5, 2.0, horizon=0)
    with pytest.raises(ValueError, match="step_size must be an integer >= 1"):
        StepDecay(0.5, 0, 0.5)
    with pytest.raises(ValueError, match=r"factor must be a float in \[0, 1\]"):
        StepDecay(0.5, 10, 1.5)


def test_bad_step():
    lam = LinearDecay(0.5, 50)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        lam(-1)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        lam(1.5)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        lam(-3)
