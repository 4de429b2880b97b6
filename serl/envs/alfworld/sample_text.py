"""ALFWorld-like sample text: the corpus the tiny test model's tokenizer is trained on (serl.policy.tiny).

It lives with the ALFWorld adapter because it is ALFWorld's language (commands, observations, the prompt
template's phrases); changing it changes the tiny tokenizer's vocabulary and with it every tiny-model fixture.
"""

from __future__ import annotations

_OBJECTS = [
    "apple", "mug", "cup", "bowl", "plate", "pan", "pot", "knife", "fork", "spoon", "egg", "potato",
    "tomato", "lettuce", "bread", "book", "pencil", "pen", "cellphone", "keychain", "creditcard",
    "alarmclock", "desklamp", "floorlamp", "pillow", "cloth", "soapbar", "towel", "vase", "statue",
]
_RECEPTACLES = [
    "countertop", "cabinet", "drawer", "fridge", "microwave", "sinkbasin", "stoveburner", "shelf",
    "desk", "bed", "sidetable", "diningtable", "garbagecan", "coffeemachine", "toilet", "bathtubbasin",
    "dresser", "sofa", "armchair", "safe",
]


def tokenizer_corpus() -> list[str]:
    """Deterministic ALFWorld-like training text for the tiny test model's BPE (no randomness involved)."""
    lines = [
        "You are an expert agent operating in the ALFRED Embodied Environment.",
        "-= Welcome to TextWorld, ALFRED! =-",
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, "
        "a drawer 2, a fridge 1, a microwave 1, a sinkbasin 1, and a stoveburner 3.",
        "Your task is to: put a clean mug in coffeemachine.",
        "Your admissible actions of the current situation are: ['go to countertop 1'\n 'inventory'\n 'look']",
        "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations "
        "and the corresponding actions you took:",
        "[Observation 1: 'You arrive at countertop 1.', Action 1: 'take apple 1 from countertop 1']",
        "You are now at step 4 and your current observation is: Nothing happens.",
        "Now it's your turn to take an action. You should first reason step-by-step about the current "
        "situation. This reasoning process MUST be enclosed within <think> </think> tags. Once you've "
        "finished your reasoning, you should choose an admissible action for current step and present it "
        "within <action> </action> tags.",
        "<think>I need to find the mug first. It may be in the cabinet.</think><action>go to cabinet 1</action>",
        "<think>The task is done.</think><action>look</action>",
        "You won! The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 , . ! ? ' \" : ; ( ) [ ]",
    ]
    for i, obj in enumerate(_OBJECTS):
        recep = _RECEPTACLES[i % len(_RECEPTACLES)]
        other = _RECEPTACLES[(3 * i + 1) % len(_RECEPTACLES)]
        n = i % 3 + 1
        lines += [
            f"go to {recep} {n}",
            f"You arrive at {recep} {n}. On the {recep} {n}, you see a {obj} {n}, and a {obj} {n + 1}.",
            f"take {obj} {n} from {recep} {n}",
            f"You pick up the {obj} {n} from the {recep} {n}.",
            f"move {obj} {n} to {other} {n}",
            f"You move the {obj} {n} to the {other} {n}.",
            f"open {recep} {n}",
            f"You open the {recep} {n}. The {recep} {n} is open. In it, you see a {obj} {n}.",
            f"close {recep} {n}",
            f"heat {obj} {n} with microwave 1",
            f"cool {obj} {n} with fridge 1",
            f"clean {obj} {n} with sinkbasin 1",
            f"use desklamp {n}",
            f"examine {obj} {n}",
            f"Your task is to: put some {obj} on {other}.",
            f"<think>I see a {obj} {n} on the {recep} {n}. I should take it.</think>"
            f"<action>take {obj} {n} from {recep} {n}</action>",
        ]
    for recep in _RECEPTACLES:
        lines += [f"go to {recep} {n}" for n in range(1, 10)]
        lines.append(f"The {recep} 1 is closed. You close the {recep} 2. Nothing happens.")
    for obj in _OBJECTS:
        lines.append(f"put a hot {obj} in the fridge; find a cool {obj}; look at {obj} under the desklamp.")
    return lines
