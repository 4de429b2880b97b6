"""The mask and response-format functions with WebShop's bracket verbs and a mode argument, as the response-format
tests call them (serl/algo/masks.py takes the verbs from the env; serl/envs/response.py fixes the mode per env)."""

from __future__ import annotations

import serl.algo.masks as _masks
from serl.envs.response import ThinkActionFormat

# The reference's §6.2 rule 3 marks the env's bracket commands; these cases use WebShop's verbs.
WEB = ("search", "click")


def reference_action_spans(text, bracket_verbs=WEB):
    return _masks.reference_action_spans(text, bracket_verbs)


def find_action_spans(text, mode="serl", charset=_masks.PRINTABLE_ASCII, bracket_verbs=WEB):
    return _masks.find_action_spans(text, mode, charset, bracket_verbs)


def action_mask_from_ids(ids, decode, mode="serl", charset=_masks.PRINTABLE_ASCII, bracket_verbs=WEB):
    return _masks.action_mask_from_ids(ids, decode, mode, charset, bracket_verbs)


def strip_thinking(text, mode="serl"):
    return ThinkActionFormat(mode=mode).strip_thinking(text)


def candidate_action(response, remove_thinking=True, mode="serl"):
    return ThinkActionFormat(mode=mode).candidate_action(response, remove_thinking)
