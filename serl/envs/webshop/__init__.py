"""WebShop adapter: a native engine of the WebShop protocol (docs/webshop.md; docs/design.md §5).

Modules:

* :mod:`.catalog` — one loader for the official JSON files (``$WEBSHOP_DATA``) and the bundled catalog
  (``data/``), goals and the leak-free train/test split (WEBSHOP_SPEC §1–§2).
* :mod:`.search` — BM25 product search on ``bm25s`` with an Anserini-like analyzer (§4).
* :mod:`.reward` — the WebShop reward as pure functions (§5).
* :mod:`.engine` — the page state machine ``WebshopEngine`` and the text ``gymnasium.Env``
  ``WebshopTextEnv`` (§3); the official quirks behind ``faithful``.
* :mod:`.prompts` — the SERL student prompt templates and page formatting (SERL_REFERENCE §8.2).
* :mod:`.suite` — ``WebshopSuite``, the :class:`~serl.envs.base.EnvSuite`.

Public classes are re-exported lazily so that ``import serl.envs.webshop`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WebshopEngine", "WebshopSuite", "WebshopTextEnv", "load_catalog"]


def __getattr__(name: str) -> Any:  # lazy re-exports, see module docstring
    if name == "WebshopSuite":
        from serl.envs.webshop.suite import WebshopSuite

        return WebshopSuite
    if name in ("WebshopTextEnv", "WebshopEngine"):
        from serl.envs.webshop import engine

        return getattr(engine, name)
    if name == "load_catalog":
        from serl.envs.webshop.catalog import load_catalog

        return load_catalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
