"""Generate serl's bundled WebShop catalog (serl/envs/webshop/data/), deterministically and offline.

    .venv/bin/python scripts/make_webshop_catalog.py            # writes the data files (seed 0)
    .venv/bin/python scripts/make_webshop_catalog.py --check    # regenerates in memory, fails if they differ

Output, in the official JSON schema (WEBSHOP_SPEC §1.2–§1.3), so one loader serves both sources:

* ``items_shuffle_bundled.json`` — products: ``asin`` (10 uppercase alphanumerics), ``name``,
  ``full_description``, ``small_description`` (3 bullets), ``pricing`` (single price, a range, an empty one
  and one above $980), ``customization_options`` (raw values such as ``"Black/White"``, cleaned on load),
  ``images``, ``category``, ``query`` (shared by the products of one type), ``product_category`` (a ``›``
  breadcrumb with >= 3 parts), plus a ``brand`` key the loader drops;
* ``items_ins_v2_bundled.json`` — per ASIN: ``attributes`` (the product's attribute phrases),
  ``instruction`` (a synthetic instruction in WebShop's style) and ``instruction_attributes`` (1–2 of the
  attributes, so a perfect purchase covers them, §8);
* ``VERSION`` — the catalog version string.

Goals are not stored: the loader generates them as WebShop does (one per option combination, §2.3). The
script checks the constraints of WEBSHOP_SPEC §8 (unique ASINs, option values that never collide with a
button or another group, title words without repeats, every goal reachable with reward 1.0 by its expert
plan) and refuses to write a catalog that breaks one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serl.envs.webshop.reward import normalize_color

VERSION = "serl-webshop-bundled-1.0"
SEED = 0
PRODUCTS_PER_TYPE = 10
OUT = ROOT / "serl" / "envs" / "webshop" / "data"
SEP = " › "  # U+203A, WEBSHOP_SPEC §1.2
BUTTONS = {"back to search", "< prev", "next >", "description", "features", "reviews", "attributes", "buy now", "search"}

BRANDS = (
    "Lumora", "Vextra", "Halden", "Brisa", "Korrin", "Nuvelle", "Ostero", "Pavlin", "Quenta", "Rivano", "Sollen",
    "Tamsin", "Ulvera", "Varno", "Wexley", "Yarrow", "Zentis", "Arvella", "Bexley", "Cordano", "Delmar", "Elstra",
    "Fennick", "Gorran"
)

# category -> (breadcrumb root, product types). A type: query, title noun phrase, breadcrumb tail, attribute
# pool, option groups (name -> value pool, 2..n values drawn per product), price range, a usage phrase.
CATALOG = {
    "beauty": ("Beauty & Personal Care", [
        ("hair serum", "Hair Serum", ["Hair Care", "Styling Products", "Serums"],
         ["argan oil", "frizz control", "heat protection", "paraben free", "sulfate free", "lightweight formula"],
         {"size": ["2 Fl Oz", "3.4 Fl Oz", "6.8 Fl Oz"]}, (8, 35), "smooth and shiny hair"),
        ("face moisturizer", "Face Moisturizer", ["Skin Care", "Face", "Moisturizers"],
         ["hyaluronic acid", "fragrance free", "sensitive skin", "non comedogenic", "vitamin c", "oil free"],
         {"size": ["1.7 Oz", "2.5 Oz", "4 Oz"]}, (12, 48), "daily hydration"),
        ("nail polish", "Nail Polish", ["Foot, Hand & Nail Care", "Nail Art & Polish", "Nail Polish"],
         ["quick drying", "long lasting", "chip resistant", "vegan formula", "high gloss", "cruelty free"],
         {"color": ["Coral", "Burgundy", "Nude", "Lavender", "Teal"]}, (5, 18), "salon finish at home"),
        ("makeup brush set", "Makeup Brushes", ["Tools & Accessories", "Makeup Brushes & Tools", "Brush Sets"],
         ["synthetic bristles", "travel case", "cruelty free", "soft bristles", "easy to clean", "wooden handle"],
         {"color": ["Black", "Rose Gold", "Champagne"], "size": ["Pack of 10", "Pack of 15"]}, (9, 40), "flawless blending"),
        ("body lotion", "Body Lotion", ["Skin Care", "Body", "Lotions"],
         ["shea butter", "dry skin", "fast absorbing", "natural ingredients", "non greasy", "coconut oil"],
         {"scent": ["Lavender Vanilla", "Unscented", "Citrus Mint"], "size": ["8 Fl Oz", "16 Fl Oz"]}, (6, 28), "soft skin all day"),
    ]),
    "electronics": ("Electronics", [
        ("wireless earbuds", "Earbuds", ["Headphones, Earbuds & Accessories", "Headphones & Earbuds", "Earbud Headphones"],
         ["noise cancelling", "bluetooth 5.3", "charging case", "water resistant", "long battery life",
          "touch control"],
         {"color": ["Black", "White", "Navy", "Silver"]}, (19, 120), "music and calls"),
        ("phone charger", "Phone Charger", ["Cell Phones & Accessories", "Chargers & Power Adapters", "Wall Chargers"],
         ["fast charging", "usb c", "foldable plug", "overheat protection", "dual port", "compact design"],
         {"color": ["Black", "White"], "size": ["20W", "35W", "65W"]}, (9, 45), "charging on the go"),
        ("bluetooth speaker", "Speaker", ["Portable Audio & Video", "Portable Speakers & Docks", "Portable Bluetooth Speakers"],
         ["waterproof", "deep bass", "built in microphone", "stereo pairing", "long battery life", "shockproof"],
         {"color": ["Black", "Blue", "Red", "Green"]}, (25, 150), "outdoor parties"),
        ("usb flash drive", "Flash Drive", ["Computers & Accessories", "Data Storage", "USB Flash Drives"],
         ["usb 3.0", "high speed", "metal casing", "keychain design", "plug and play", "password protection"],
         {"size": ["32GB", "64GB", "128GB", "256GB"]}, (6, 40), "backups and file transfer"),
        ("gaming mouse", "Gaming Mouse", ["Computers & Accessories", "Computer Accessories & Peripherals", "Mice"],
         ["rgb lighting", "adjustable dpi", "ergonomic design", "programmable buttons", "wired connection",
          "low latency"],
         {"color": ["Black", "White", "Pink"]}, (15, 80), "competitive gaming"),
    ]),
    "fashion": ("Clothing, Shoes & Jewelry", [
        ("running shoes", "Running Shoes", ["Men", "Shoes", "Athletic"],
         ["breathable mesh", "rubber sole", "arch support", "lace up", "cushioned insole", "slip resistant"],
         {"color": ["Black", "Grey", "Blue", "White"], "size": ["8", "9", "10", "11"]}, (35, 130), "daily runs"),
        ("hoodie", "Hoodie", ["Women", "Clothing", "Fashion Hoodies & Sweatshirts"],
         ["cotton blend", "machine wash", "kangaroo pocket", "relaxed fit", "fleece lined", "drawstring hood"],
         {"color": ["Charcoal", "Olive", "Burgundy", "Cream"], "size": ["Small", "Medium", "Large", "X-Large"]}, (22, 60), "cool evenings"),
        ("leather belt", "Belt", ["Men", "Accessories", "Belts"],
         ["genuine leather", "alloy buckle", "adjustable length", "gift box", "casual style", "scratch resistant"],
         {"color": ["Black", "Brown", "Tan Brown"], "size": ["32", "34", "36", "38"]}, (14, 45), "work and weekends"),
        ("yoga pants", "Leggings", ["Women", "Clothing", "Active", "Active Leggings"],
         ["high waist", "tummy control", "four way stretch", "squat proof", "moisture wicking", "side pockets"],
         {"color": ["Black", "Navy", "Plum", "Grey"], "size": ["X-Small", "Small", "Medium", "Large"]}, (18, 48), "yoga and workouts"),
        ("sun hat", "Sun Hat", ["Women", "Accessories", "Hats & Caps", "Sun Hats"],
         ["wide brim", "upf 50", "packable", "adjustable strap", "straw material", "breathable"],
         {"color": ["Beige", "Khaki", "Black/White"]}, (12, 35), "beach days"),
    ]),
    "food": ("Grocery & Gourmet Food", [
        ("green tea", "Green Tea", ["Beverages", "Tea", "Green"],
         ["organic", "caffeine", "individually wrapped", "non gmo", "antioxidant rich", "loose leaf"],
         {"flavor name": ["Jasmine", "Matcha", "Honey Ginger"], "size": ["Pack of 2", "Pack of 4"]}, (6, 30), "a calm afternoon"),
        ("protein bar", "Protein Bars", ["Snack Foods", "Bars", "Protein Bars"],
         ["gluten free", "high protein", "low sugar", "keto friendly", "plant based", "no artificial sweeteners"],
         {"flavor name": ["Chocolate Fudge", "Peanut Butter", "Cookie Dough"], "size": ["12 Count", "24 Count"]}, (15, 45), "snacks after training"),
        ("coffee beans", "Coffee Beans", ["Beverages", "Coffee, Tea & Cocoa", "Coffee", "Whole Coffee Beans"],
         ["medium roast", "single origin", "fair trade", "whole bean", "arabica", "small batch"],
         {"size": ["12 Ounce", "2 Pound", "5 Pound"]}, (11, 65), "a rich morning cup"),
        ("honey", "Honey", ["Pantry Staples", "Jams, Jellies & Sweet Spreads", "Honey"],
         ["raw", "unfiltered", "local", "glass jar", "kosher", "pure"],
         {"size": ["12 Ounce", "16 Ounce", "32 Ounce"]}, (8, 30), "tea and baking"),
        ("trail mix", "Trail Mix", ["Snack Foods", "Nuts & Seeds", "Trail Mix"],
         ["resealable bag", "roasted nuts", "dried fruit", "vegan", "no added salt", "heart healthy"],
         {"flavor name": ["Tropical", "Dark Chocolate", "Classic Nut"]}, (7, 25), "hiking snacks"),
    ]),
    "furniture": ("Home & Kitchen", [
        ("office chair", "Office Chair", ["Furniture", "Home Office Furniture", "Home Office Chairs"],
         ["lumbar support", "height adjustable", "mesh back", "swivel", "padded armrests", "easy assembly"],
         {"color": ["Black", "Grey", "White"]}, (80, 320), "long work days"),
        ("bookshelf", "Bookshelf", ["Furniture", "Living Room Furniture", "Bookcases"],
         ["solid wood", "5 tier", "space saving", "anti tip", "easy assembly", "industrial style"],
         {"color": ["Walnut", "White", "Black"]}, (45, 210), "books and plants"),
        ("coffee table", "Coffee Table", ["Furniture", "Living Room Furniture", "Tables", "Coffee Tables"],
         ["storage shelf", "tempered glass", "metal frame", "lift top", "mid century", "rounded corners"],
         {"color": ["Oak", "Espresso", "White"]}, (60, 260), "the living room"),
        ("bar stool", "Bar Stools", ["Furniture", "Kitchen & Dining Room Furniture", "Bar Stools"],
         ["counter height", "footrest", "faux leather", "swivel", "backrest", "set of 2"],
         {"color": ["Black", "Grey", "Brown"], "size": ["24 Inch", "30 Inch"]}, (70, 240), "the kitchen island"),
        ("nightstand", "Nightstand", ["Furniture", "Bedroom Furniture", "Nightstands"],
         ["2 drawers", "charging station", "open shelf", "solid wood", "easy assembly", "compact size"],
         {"color": ["Rustic Brown", "White", "Grey"]}, (40, 160), "the bedroom"),
    ]),
    "garden": ("Patio, Lawn & Garden", [
        ("garden hose", "Garden Hose", ["Gardening & Lawn Care", "Watering Equipment", "Garden Hoses"],
         ["expandable", "kink free", "brass fittings", "leak proof", "lightweight", "spray nozzle"],
         {"size": ["25 Feet", "50 Feet", "100 Feet"]}, (18, 70), "watering the yard"),
        ("solar lights", "Solar Lights", ["Outdoor Decor", "Outdoor Lighting", "Pathway Lights"],
         ["auto on off", "waterproof", "warm white", "stainless steel", "easy install", "dusk to dawn"],
         {"size": ["Pack of 6", "Pack of 8", "Pack of 12"]}, (19, 60), "pathways and gardens"),
        ("planter pot", "Planter Pots", ["Gardening & Lawn Care", "Pots, Planters & Container Accessories", "Planters"],
         ["drainage hole", "ceramic", "saucer included", "indoor outdoor", "modern design", "frost resistant"],
         {"color": ["White", "Terracotta", "Black"], "size": ["6 Inch", "8 Inch"]}, (14, 55), "herbs and succulents"),
        ("pruning shears", "Pruning Shears", ["Gardening & Lawn Care", "Hand Tools", "Pruners"],
         ["sharp blade", "safety lock", "ergonomic handle", "rust resistant", "bypass design", "spring loaded"],
         {"color": ["Red", "Green", "Orange"]}, (9, 35), "trimming branches"),
        ("bird feeder", "Bird Feeder", ["Outdoor Decor", "Bird & Wildlife Care", "Bird Feeders"],
         ["squirrel proof", "hanging", "weatherproof", "easy to fill", "large capacity", "metal roof"],
         {"color": ["Green", "Copper", "Black"]}, (15, 50), "backyard birds"),
    ]),
}

ADJ = ["Premium", "Classic", "Everyday", "Pro", "Essential", "Signature", "Ultra", "Studio"]
INSTRUCTIONS = [
    "i want {a1} {noun}",
    "i need {a1} {noun}",
    "i am looking for {a1} {noun} that is {a2}",
    "i'm looking for a {noun} with {a1} and {a2}",
    "i need a {noun} which is {a1}",
    "find me {a1} {noun} with {a2}",
]
BULLETS = [
    "{A1}: designed for {use}.",
    "{A2} for everyday comfort and reliability.",
    "Made with {a3}, tested for quality by {brand}.",
    "What you get: one {noun}, satisfaction guaranteed.",
]


def _asin(rng: random.Random, seen: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        if asin not in seen:
            seen.add(asin)
            return asin


def _price(rng: random.Random, lo: float, hi: float, i: int) -> str:
    if i % 37 == 5:
        return ""  # WEBSHOP_SPEC §1.5-3: missing pricing -> $100.0
    a = round(rng.uniform(lo, hi), 0) - 0.01
    if rng.random() < 0.25:
        b = round(a * rng.uniform(1.1, 1.5), 0) - 0.01
        return f"${a:.2f} - ${b:.2f}"
    return f"${a:,.2f}"


def generate(seed: int = SEED) -> tuple[list[dict], dict[str, dict]]:
    """The products and the attribute file (see the module docstring)."""
    rng = random.Random(seed)
    products: list[dict] = []
    attrs: dict[str, dict] = {}
    seen: set[str] = set()
    i = 0
    for category, (root, types) in CATALOG.items():
        for query, noun, tail, pool, option_pool, (lo, hi), use in types:
            for _ in range(PRODUCTS_PER_TYPE):
                brand = rng.choice(BRANDS)
                chosen = rng.sample(pool, 4)
                a1, a2, a3 = chosen[:3]
                while True:
                    adj = rng.choice(ADJ)
                    title = f"{brand} {adj} {noun} with {a1.title()}, {a2.title()}"
                    words = [w for w in title.lower().replace(",", " ").split() if w.isalpha()]
                    if len(words) == len(set(words)):
                        break
                    a1, a2 = rng.sample(chosen, 2)
                    a3 = next(a for a in chosen if a not in (a1, a2))
                asin = _asin(rng, seen)
                options = {}
                for name, values in option_pool.items():
                    k = rng.randint(2, min(3, len(values)))
                    picked = sorted(rng.sample(values, k), key=values.index)
                    options[name.title() if name != "flavor name" else "Flavor Name"] = [
                        {"value": v, "image": f"https://example.invalid/{asin}/{j}.jpg" if j == 0 else None}
                        for j, v in enumerate(picked)
                    ]
                if i % 41 == 7:
                    options = {}  # a product without options: exactly one goal
                pricing = "$1,299.00" if i == 123 else _price(rng, lo, hi, i)  # one above $980: no price bound
                fmt = {"a1": a1, "a2": a2, "a3": a3, "A1": a1.capitalize(), "A2": a2.capitalize(), "noun": noun.lower(),
                       "use": use, "brand": brand}
                bullets = [b.format(**fmt) for b in rng.sample(BULLETS, 3)]
                desc = (f"The {brand} {noun.lower()} is made for {use}. It offers {a1}, {a2} and {a3}. "
                        f"{rng.choice(['Backed by a one year warranty.', 'Ships in recyclable packaging.', 'Loved by thousands of customers.'])}")
                products.append({
                    "asin": asin,
                    "name": title,
                    "full_description": desc,
                    "small_description": bullets,
                    "pricing": pricing,
                    "customization_options": options or None,
                    "images": [f"https://example.invalid/{asin}/main.jpg"],
                    "category": category,
                    "query": query + " ",  # WEBSHOP_SPEC §1.5-2: stripped and lowercased on load
                    "product_category": SEP.join([root] + tail),
                    "brand": brand,
                })
                n_ins = rng.choice([1, 2])
                ins_attrs = [a1] if n_ins == 1 else [a1, a2]
                template = rng.choice([t for t in INSTRUCTIONS if ("{a2}" in t) == (n_ins == 2)])
                attrs[asin] = {
                    "attributes": chosen,
                    "instruction": template.format(a1=a1, a2=a2, noun=noun.lower()),
                    "instruction_attributes": ins_attrs,
                }
                i += 1
    order = list(range(len(products)))
    rng.shuffle(order)  # the official file is pre-shuffled too (§1.1)
    return [products[j] for j in order], attrs


def check(products: list[dict], attrs: dict[str, dict]) -> None:
    """WEBSHOP_SPEC §8 constraints; raises ``ValueError`` on the first violation."""
    from serl.envs.webshop.catalog import build_catalog, clean_option_value
    from serl.envs.webshop.search import SearchIndex
    from serl.envs.webshop.suite import WebshopSuite

    asins = [p["asin"] for p in products]
    if len(set(asins)) != len(asins) or any(len(a) > 10 or not a.isalnum() or a != a.upper() for a in asins):
        raise ValueError("ASINs must be unique, <= 10 uppercase alphanumerics")
    for p in products:
        if len(p["product_category"].split("›")) < 2 or not p["small_description"] or not p["images"]:
            raise ValueError(f"{p['asin']}: needs >= 2 breadcrumb parts, a bullet and an image")
        values = [clean_option_value(v["value"]) for vs in (p["customization_options"] or {}).values() for v in vs]
        if len(set(values)) != len(values) or BUTTONS & set(values):
            raise ValueError(f"{p['asin']}: option values collide: {values}")
        for v in values:  # the first COLOR_SET hit must be a whole word, or the fuzzy option match fails
            c = normalize_color(v)
            if c != v and c not in v.replace("|", " ").split():
                raise ValueError(f"{p['asin']}: option value {v!r} normalises to the partial word {c!r}")
    cat = build_catalog(products, attrs, seed=42, source="bundled", version=VERSION)
    queries: dict[str, int] = {}
    for p in cat.products:
        queries[p.query] = queries.get(p.query, 0) + 1
    if max(queries.values()) > 50:
        raise ValueError("a query holds more than 50 products")
    suite = WebshopSuite(catalog="bundled", test_size=500)
    suite._catalog, suite._index = cat, SearchIndex(cat.products)  # the in-memory catalog, not the files
    env = suite.make_env(max_episode_steps=20)
    for i in range(len(cat.goals)):
        env.reset(options={"game": f"goal:{i}"})
        for action in suite.expert_plan(f"goal:{i}"):
            _, _, done, _, info = env.step(action)
        if not (done and info["won"]):
            raise ValueError(f"goal:{i}: the expert plan scores {info['score']}, not 1.0")


def write(products: list[dict], attrs: dict[str, dict], out: Path) -> dict[Path, str]:
    """The files' paths and texts (nothing is written here)."""
    texts = {
        out / "items_shuffle_bundled.json": json.dumps(products, ensure_ascii=False, indent=0) + "\n",
        out / "items_ins_v2_bundled.json": json.dumps(attrs, ensure_ascii=False, indent=0, sort_keys=True) + "\n",
        out / "VERSION": f"{VERSION}\n",
    }
    return texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args()
    products, attrs = generate(args.seed)
    texts = write(products, attrs, args.out)
    if args.check:
        stale = [str(p) for p, t in texts.items() if not p.is_file() or p.read_text(encoding="utf-8") != t]
        if stale:
            print("out of date:", *stale, sep="\n  ")
            return 1
        print("bundled catalog up to date")
        return 0
    check(products, attrs)
    args.out.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    n_goals = sum(
        len(list(itertools.product(*[v for v in (p["customization_options"] or {}).values()]))) for p in products
    )
    size = sum(p.stat().st_size for p in texts)
    print(f"wrote {len(products)} products, {n_goals} goals, {size / 1024:.0f} KiB to {args.out} ({VERSION})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
