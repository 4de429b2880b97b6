"""Constrained argument types for the constructors that config nodes build.

A config node with ``_target_`` and ``_partial_: true`` (``learner`` and ``teacher`` in ``conf/train.yaml``)
is completed by :mod:`serl.build` with runtime parts (the policy model, its tokenizer), so its constructor
cannot run while the config is checked. :mod:`serl.config_schema` checks such a node's values against the
constructor's type hints instead, before any model loads; these aliases put each argument's allowed values
into that hint, next to the argument (one rule, stated once). They are ``typing.Annotated`` types: Python
callers see ``float``, ``int`` and ``str``.
"""

import string
from typing import Annotated

from annotated_types import Ge, Gt, Lt
from pydantic import AfterValidator

PositiveFloat = Annotated[float, Gt(0)]  # > 0 (learning rate, grad-norm bound, temperature)
NonNegativeFloat = Annotated[float, Ge(0)]  # >= 0 (weight decay, clip ranges, coefficients)
UnitFloat = Annotated[float, Ge(0), Lt(1)]  # in [0, 1) (Adam betas, the PPO clip below 1)
Count = Annotated[int, Ge(1)]  # >= 1 (batch sizes, epochs, intervals, token budgets)

TEMPLATE_FIELDS = ("prompt", "privileged_context")


def check_privileged_template(template: str) -> str:
    """``template`` if it is a format string with exactly the fields ``{prompt}`` and ``{privileged_context}``
    (literal braces written ``{{ }}``); else ValueError naming what is missing or unknown."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"not a format string ({e})") from None
    missing = sorted(set(TEMPLATE_FIELDS) - fields)
    extra = sorted(fields - set(TEMPLATE_FIELDS))
    if missing or extra:
        raise ValueError(f"missing {missing}, unknown fields {extra}" if extra else f"missing {missing}")
    return template


PrivilegedTemplate = Annotated[str, AfterValidator(check_privileged_template)]  # the teacher's prompt (§3.2)
