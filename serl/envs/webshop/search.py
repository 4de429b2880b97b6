"""BM25 product search for the WebShop engine (WEBSHOP_SPEC §4), on the ``bm25s`` package.

Index: one document per product, ``contents`` = lowercase of ``Title + " " + Description + " " +
BulletPoints[0] + " " + option_text`` with ``option_text`` = ``", and ".join("name: v1, v2, …")`` — only
the first bullet is indexed; price, category, query and the other bullets are not (§4).

Query: the keyword list joined by spaces, analysed like the documents; a disjunctive (OR) query: only
documents holding at least one query term are returned, sorted by score descending with ties broken by ASIN
ascending, top ``k = 50`` (``SEARCH_RETURN_N``). A query whose terms are all stop words returns nothing.

Analyzer (Anserini's English default, §4): tokenise, drop English possessives (``'s``), lowercase, remove
Lucene's 33 English stop words, stem with the Porter stemmer (:func:`porter_stem`, the algorithm of Lucene's
``PorterStemmer``). Scoring: Lucene BM25 with ``k1 = 0.9``, ``b = 0.4``, ``idf = ln(1 + (N − df + 0.5)/(df +
0.5))`` (``bm25s`` method ``"lucene"``); a query term repeated c times counts c times.

Where results may differ from pyserini's (the official ``LuceneSearcher``):

* Tokeniser: a regular expression approximates Lucene's StandardTokenizer (Unicode UAX #29 word breaks):
  letters/digits/underscore runs, joined across ``.`` and ``'`` between word characters (``3.5``,
  ``u.s.a``, ``don't`` stay whole) and across ``,`` before a digit (``1,299``); hyphens split (``clip-in``
  -> ``clip``, ``in``). Rare scripts (ideographs are one token each in Lucene), emoji and the 255-character
  token limit are not modelled.
- Scores: ``bm25s`` keeps exact document lengths in float32, Lucene stores them lossily (one byte,
  SmallFloat), so scores differ in the last digits and near-ties can swap order; ties are broken by ASIN
  here, by Lucene's internal doc id there (index order), which is the file order of the products.
* Stemmer: Lucene's Porter (with the ``bli``/``logi`` rules of Porter's reference code); snowball's
  "porter" differs on a handful of rare words.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serl.envs.webshop.catalog import Product

log = logging.getLogger(__name__)

SEARCH_RETURN_N = 50  # §4: k = 50 hits
K1, B = 0.9, 0.4  # §4: Anserini defaults
ANALYZER_VERSION = "1"  # bump when the analyzer changes (part of the on-disk index cache key)
# §4: Lucene's English stop set (33 words)
STOP_WORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
        "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
        "will", "with"
    )
)
_TOKEN = re.compile(r"\w+(?:[.'’]\w+|,\d+)*")


# ------------------------------------------------------------------------------------- Porter stemmer


def _cons(w: str, i: int) -> bool:
    ch = w[i]
    if ch in "aeiou":
        return False
    if ch == "y":
        return i == 0 or not _cons(w, i - 1)
    return True


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]."""
    n, i, m = len(stem), 0, 0
    while i < n and _cons(stem, i):
        i += 1
    while i < n:
        while i < n and not _cons(stem, i):
            i += 1
        if i >= n:
            break
        m += 1
        while i < n and _cons(stem, i):
            i += 1
    return m


def _vowel_in(stem: str) -> bool:
    return any(not _cons(stem, i) for i in range(len(stem)))


def _double_c(w: str) -> bool:
    return len(w) >= 2 and w[-1] == w[-2] and _cons(w, len(w) - 1)


def _cvc(w: str) -> bool:
    n = len(w)
    return n >= 3 and _cons(w, n - 1) and not _cons(w, n - 2) and _cons(w, n - 3) and w[-1] not in "wxy"


_STEP2 = (  # (suffix, replacement), checked in this order; the first suffix that ends the word decides
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"), ("bli", "ble"),
    ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"),
    ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
    ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
)
_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""),
)
_STEP4 = (
    "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism", "ate",
    "iti", "ous", "ive", "ize",
)


def _replace_group(w: str, rules: Sequence[tuple[str, str]], min_m: int) -> str:
    # Lucene's switch picks the suffix group by the penultimate letter, and the first rule in the group
    # whose suffix ends the word decides; grouping by that letter reproduces it.
    for suffix, repl in rules:
        if w.endswith(suffix) and suffix[-2] == w[-2]:
            stem = w[: -len(suffix)]
            return stem + repl if _measure(stem) > min_m - 1 else w
    return w


@functools.lru_cache(maxsize=1 << 18)
def porter_stem(word: str) -> str:
    """The Porter stemmer (Porter 1980, as Lucene's ``PorterStemmer``); words of ≤ 2 letters are kept."""
    w = word
    if len(w) <= 2:
        return w
    # step 1a
    if w.endswith(("sses", "ies")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    # step 1b
    if w.endswith("eed"):
        if _measure(w[:-3]) > 0:
            w = w[:-1]
    else:
        for suf in ("ed", "ing"):
            if w.endswith(suf) and _vowel_in(w[: -len(suf)]):
                w = w[: -len(suf)]
                if w.endswith(("at", "bl", "iz")):
                    w += "e"
                elif _double_c(w):
                    if w[-1] not in "lsz":
                        w = w[:-1]
                elif _measure(w) == 1 and _cvc(w):
                    w += "e"
                break
    # step 1c
    if w.endswith("y") and _vowel_in(w[:-1]):
        w = w[:-1] + "i"
    if len(w) > 1:
        w = _replace_group(w, _STEP2, 1)  # step 2: m > 0
    if len(w) > 1:
        w = _replace_group(w, _STEP3, 1)  # step 3: m > 0
    # step 4: m > 1 (first matching suffix in the penultimate-letter group decides)
    if len(w) > 1:
        for suffix in _STEP4:
            if w.endswith(suffix) and suffix[-2] == w[-2]:
                stem = w[: -len(suffix)]
                if suffix == "ion" and not stem.endswith(("s", "t")):
                    break
                if _measure(stem) > 1:
                    w = stem
                break
    # step 5a/5b
    if w.endswith("e"):
        m = _measure(w[:-1])
        if m > 1 or (m == 1 and not _cvc(w[:-1])):
            w = w[:-1]
    if w.endswith("ll") and _measure(w) > 1:
        w = w[:-1]
    return w


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` through the Anserini-like English analyzer (module docstring)."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok.endswith(("'s", "’s")):
            tok = tok[:-2]
        if not tok or tok in STOP_WORDS:
            continue
        out.append(porter_stem(tok))
    return out


def document_text(p: Product) -> str:
    """The indexed ``contents`` of a product (§4)."""
    first_bullet = p.bullet_points[0] if p.bullet_points else ""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in p.options.items())
    return f"{p.title} {p.description} {first_bullet} {option_text}".lower()


class SearchIndex:
    """BM25 over a product list (see the module docstring).

    ``search(keywords)`` returns up to :data:`SEARCH_RETURN_N` ASINs, best first.
    """

    def __init__(
        self, products: Sequence[Product], cache_dir: str | Path | None = None, cache_key: str | None = None
    ) -> None:
        """Index ``products``; with ``cache_dir`` and ``cache_key`` (e.g. ``Catalog.fingerprint``, a hash of the
        indexed text) the BM25 index is saved there once and loaded, without re-analysing, next time."""
        import bm25s

        self.asins = [p.asin for p in products]
        order = np.array(sorted(range(len(self.asins)), key=lambda i: self.asins[i]), dtype=np.int64)
        self._asin_rank = np.empty(len(order), dtype=np.int64)
        self._asin_rank[order] = np.arange(len(order))  # position in ASIN order: the tie-break key
        path = None
        if cache_dir is not None and cache_key:
            path = Path(cache_dir) / f"bm25_a{ANALYZER_VERSION}_{cache_key}"
            if path.is_dir():
                try:
                    self._bm25 = bm25s.BM25.load(str(path))
                    self._vocab = set(self._bm25.vocab_dict)
                    return
                except Exception as e:  # noqa: BLE001 - a broken cache entry is rebuilt
                    log.warning("WebShop index cache %s unreadable (%s): rebuilding", path, e)
        corpus = [analyze(document_text(p)) for p in products]
        self._vocab = {t for doc in corpus for t in doc}
        self._bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
        self._bm25.index(corpus, show_progress=False)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._bm25.save(str(path))

    def __len__(self) -> int:
        return len(self.asins)

    def search(self, keywords: Sequence[str], k: int = SEARCH_RETURN_N) -> list[str]:
        """The top ``k`` ASINs for the keyword list (joined by spaces, §4), best first; [] if no term hits."""
        terms = [t for t in analyze(" ".join(keywords)) if t in self._vocab]
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float64)
        hits = np.flatnonzero(scores > 0)
        if hits.size == 0:
            return []
        if hits.size > k:  # pre-select with a margin so ties at the cut are broken by ASIN, not position
            kth = np.partition(scores[hits], hits.size - k)[hits.size - k]
            hits = hits[scores[hits] >= kth]
        order = np.lexsort((self._asin_rank[hits], -scores[hits]))[:k]
        return [self.asins[i] for i in hits[order]]
