"""ALFWorld adapter: offline game generator, text gymnasium env, and the :class:`EnvSuite` (docs/design.md §5).

Modules:

* :mod:`.generator` — games generated offline from what ships in the alfworld wheel
  (docs/alfworld_games.md §2–§4): ``generate_games(root, split, n, seed)``.
* :mod:`.env` — ``AlfworldTextEnv``, a ``gymnasium.Env`` over the real TextWorld PDDL engine (docs/alfworld_games.md §5).
* :mod:`.suite` — ``AlfworldSuite``, official-or-generated game pools (§6.2), prompts and metrics
  (docs/reference.md §8.1, §8.3).
* :mod:`.prompts` — the student prompt templates (docs/reference.md §8.1).

Only these modules import ``alfworld``/``textworld``, and only lazily, through :func:`import_alfworld`:
importing any ``alfworld`` module creates ``$ALFWORLD_DATA`` (default ``~/.cache/alfworld``) as a side
effect (docs/alfworld_games.md §5.4-4), so ``ALFWORLD_DATA`` is set first (:func:`ensure_alfworld_data`).
The public classes are re-exported lazily (module ``__getattr__``) so that ``import serl.envs.alfworld``
stays cheap.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "AlfworldSuite",
    "AlfworldTextEnv",
    "generate_games",
    "default_cache_root",
    "ensure_alfworld_data",
    "import_alfworld",
]


def default_cache_root() -> Path:
    """serl's cache root: ``$SERL_CACHE`` if set, else ``~/.cache/serl`` (not created here)."""
    env = os.environ.get("SERL_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/serl").expanduser()


def ensure_alfworld_data(data_root: str | os.PathLike[str] | None = None) -> str:
    """Make sure ``ALFWORLD_DATA`` is set before the first ``alfworld`` import (docs/alfworld_games.md §5.4-4).

    Order: an explicit ``data_root`` (the official data root serl uses) wins while ``alfworld`` is not yet
    imported; otherwise an existing ``$ALFWORLD_DATA`` is kept; otherwise it is set to
    ``<serl cache root>/alfworld_data`` — an empty official-data root under serl's own cache, so that
    alfworld never creates ``~/.cache/alfworld``. Returns the value in effect.
    """
    alfworld_imported = "alfworld" in sys.modules
    if data_root is not None and not alfworld_imported:
        os.environ["ALFWORLD_DATA"] = str(Path(data_root).expanduser())
    elif not os.environ.get("ALFWORLD_DATA"):
        os.environ["ALFWORLD_DATA"] = str(default_cache_root() / "alfworld_data")
    return os.environ["ALFWORLD_DATA"]


def import_alfworld() -> None:
    """Import the alfworld/textworld modules the adapter uses, after :func:`ensure_alfworld_data`.

    Also installs :func:`_install_translation_cache` (once per process).
    """
    ensure_alfworld_data()
    import alfworld.agents.environment.alfred_tw_env  # noqa: F401
    import alfworld.gen.constants  # noqa: F401
    import alfworld.gen.goal_library  # noqa: F401
    import alfworld.info  # noqa: F401
    import textworld  # noqa: F401
    import textworld.envs.pddl  # noqa: F401

    _install_translation_cache()


TRANSLATION_CACHE_SIZE = 16  # distinct (domain, problem, optimize) translations kept per process


def _install_translation_cache() -> None:
    """Memoise ``fast_downward.pddl2sas`` and make it leave ``sys.argv`` alone.

    TextWorld's ``PddlState`` translates the PDDL problem to SAS twice (plain + optimised) every time it is
    built, and ``PddlEnv`` builds one in ``load`` *and* one in every ``reset`` (docs/alfworld_games.md §5.3: "reset
    re-runs the PDDL translation every time"), 0.2–1 s per translation on kitchens. The translation is a
    pure function of its text inputs and ``PddlState`` only reads the returned task, so a small LRU cache is
    behaviour-preserving: ``load`` + ``reset`` translate once, and resetting the same game again (a GRPO
    group) costs no translation. The original ``pddl2sas`` also overwrites ``sys.argv`` (a hack for the
    translator's option parser); the wrapper restores it.
    """
    import fast_downward

    if getattr(fast_downward.pddl2sas, "_serl_cached", False):
        return
    original = fast_downward.pddl2sas

    @functools.lru_cache(maxsize=TRANSLATION_CACHE_SIZE)
    def cached(domain: str, problem: str, verbose: bool, optimize: bool) -> Any:
        return original(domain, problem, verbose=verbose, optimize=optimize)

    def pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
        argv = sys.argv
        try:
            return cached(domain, problem, bool(verbose), bool(optimize))
        finally:
            sys.argv = argv

    pddl2sas._serl_cached = True  # type: ignore[attr-defined]
    pddl2sas.__wrapped__ = original  # type: ignore[attr-defined]
    fast_downward.pddl2sas = pddl2sas


def __getattr__(name: str) -> Any:  # lazy re-exports, see module docstring
    if name == "AlfworldSuite":
        from serl.envs.alfworld.suite import AlfworldSuite

        return AlfworldSuite
    if name == "AlfworldTextEnv":
        from serl.envs.alfworld.env import AlfworldTextEnv

        return AlfworldTextEnv
    if name == "generate_games":
        from serl.envs.alfworld.generator import generate_games

        return generate_games
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
