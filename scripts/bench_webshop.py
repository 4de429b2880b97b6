"""Benchmark the WebShop engine: catalog load, index build, search latency, reset time and env steps/s.

    .venv/bin/python scripts/bench_webshop.py                    # 1k and 100k products
    .venv/bin/python scripts/bench_webshop.py --sizes 1000 --episodes 100

Catalogs of N products are synthesised in memory from the bundled catalog: the 300 bundled products, then
copies with a new ASIN and perturbed text (title words shuffled, a random brand and description sentence,
another price), so the index grows like a real catalog rather than by exact duplicates. Goals are the
bundled products' goals (the copies carry attributes but no instruction).

Per size it prints: catalog build (cleaning + goals, s), index build (s), search latency (ms, median and
p95 over distinct queries, uncached), env reset (ms), and env steps/s of a scripted episode (search the goal's
query, open the first hit, click the first value of each option group, buy), whose steps include the
searches and the reward. Timings are wall-clock on this machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serl.envs.webshop.catalog import BUNDLED_FILES, DATA_DIR, build_catalog
from serl.envs.webshop.engine import WebshopTextEnv
from serl.envs.webshop.search import SearchIndex

WORDS = [
    "durable", "compact", "classic", "modern", "premium", "everyday", "travel", "home", "office", "outdoor", "soft",
    "sturdy", "bright", "natural", "lightweight", "portable", "elegant", "simple", "deluxe", "original",
]


def synth(n: int, seed: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """``n`` raw products (the bundled ones first, then perturbed copies) and their attribute entries."""
    base = json.loads((DATA_DIR / BUNDLED_FILES[0]).read_text(encoding="utf-8"))
    attrs = json.loads((DATA_DIR / BUNDLED_FILES[1]).read_text(encoding="utf-8"))
    rng = random.Random(seed)
    products = list(base[:n])
    seen = {p["asin"] for p in products}
    while len(products) < n:
        src = rng.choice(base)
        asin = "C" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=9))
        if asin in seen:
            continue
        seen.add(asin)
        title = src["name"].split()
        head, tail = title[:1], title[1:]
        rng.shuffle(tail)
        p = dict(src, asin=asin, name=" ".join(head + [rng.choice(WORDS).title()] + tail))
        p["full_description"] = src["full_description"] + f" A {rng.choice(WORDS)} choice for {rng.choice(WORDS)} use."
        p["pricing"] = f"${rng.uniform(5, 300):.2f}"
        products.append(p)
        attrs[asin] = {"attributes": attrs[src["asin"]]["attributes"]}
    return products, attrs


def bench(n: int, episodes: int, queries: int) -> dict[str, float]:
    raw, attrs = synth(n)
    t = time.perf_counter()
    cat = build_catalog(raw, attrs, seed=42, source="synthetic")
    t_cat = time.perf_counter() - t
    t = time.perf_counter()
    index = SearchIndex(cat.products)
    t_index = time.perf_counter() - t

    rng = random.Random(1)
    texts = sorted({g.query for g in cat.goals}) + [g.instruction_text.split(", and price")[0] for g in cat.goals]
    sample = rng.sample(texts, min(queries, len(texts)))
    lat = []
    for q in sample:
        t = time.perf_counter()
        index.search(q.split(" "))
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()

    env = WebshopTextEnv(cat, index=index, max_episode_steps=20)
    resets, steps, t_steps = [], 0, 0.0
    for i in range(episodes):
        game = f"goal:{rng.randrange(len(cat.goals))}"
        t = time.perf_counter()
        env.reset(options={"game": game})
        resets.append((time.perf_counter() - t) * 1000)
        env.engine._search_cache.clear()  # every episode's search is a real one
        t = time.perf_counter()
        _, _, _, _, info = env.step(f"search[{env.goal.query}]")
        steps += 1
        links = [c for c in info["available_actions"]["clickables"] if c not in ("back to search", "next >", "< prev")]
        if links:
            _, _, _, _, info = env.step(f"click[{links[0]}]")
            steps += 1
            prod = cat.by_asin[links[0].upper()]
            for values in prod.options.values():
                env.step(f"click[{values[0]}]")
                steps += 1
            env.step("click[buy now]")
            steps += 1
        t_steps += time.perf_counter() - t
    return {
        "products": len(cat.products),
        "goals": len(cat.goals),
        "catalog_s": t_cat,
        "index_s": t_index,
        "search_ms_p50": statistics.median(lat),
        "search_ms_p95": lat[int(0.95 * (len(lat) - 1))],
        "reset_ms": statistics.median(resets),
        "steps_per_s": steps / t_steps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rows = [bench(n, args.episodes, args.queries) for n in args.sizes]
    cols = [("products", "{:>9,d}"), ("goals", "{:>6d}"), ("catalog_s", "{:>9.2f}"), ("index_s", "{:>8.2f}"),
            ("search_ms_p50", "{:>13.2f}"), ("search_ms_p95", "{:>13.2f}"), ("reset_ms", "{:>8.3f}"),
            ("steps_per_s", "{:>11.0f}")]
    print(" | ".join(f"{c:>{len(f.format(rows[0][c]))}}" for c, f in cols))
    for r in rows:
        print(" | ".join(f.format(r[c]) for c, f in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
