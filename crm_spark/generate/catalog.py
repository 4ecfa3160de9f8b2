"""The product catalogue and the planted associations: small dimension data built on the driver.

Everything here is drawn from ``numpy.random.default_rng(seed)`` (PCG64, identical on every
platform), so the catalogue is a pure function of ``(seed, customers, days)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# category -> (weight as a favourite category, brands, [(subcategory, median list price, noun, share)])
_CATEGORIES: dict[str, tuple[float, tuple[str, ...], tuple[tuple[str, float, str, float], ...]]] = {
    "electronics": (
        1.2,
        ("Voltix", "Nordlys", "Auralis", "Kestrel", "Pixelon"),
        (
            ("smartphones", 420.0, "Smartphone", 1.2),
            ("phone_cases", 18.0, "Phone Case", 1.0),
            ("headphones", 85.0, "Headphones", 1.0),
            ("laptops", 950.0, "Laptop", 0.8),
            ("laptop_bags", 45.0, "Laptop Bag", 0.7),
            ("cameras", 520.0, "Camera", 0.6),
            ("memory_cards", 22.0, "Memory Card", 0.6),
            ("smart_home", 60.0, "Smart Plug", 0.8),
        ),
    ),
    "home_kitchen": (
        1.0,
        ("Casalta", "Hearthwell", "Kuchenwerk", "Maison Bleu", "Oakridge"),
        (
            ("coffee_machines", 180.0, "Coffee Machine", 0.7),
            ("mugs", 14.0, "Mug Set", 0.8),
            ("cookware", 55.0, "Frying Pan", 1.0),
            ("bedding", 60.0, "Duvet Cover", 0.8),
            ("bbq_grills", 240.0, "Charcoal Grill", 0.5),
            ("bbq_tools", 28.0, "BBQ Tool Set", 0.5),
        ),
    ),
    "fashion": (
        1.2,
        ("Linea", "Urban Fox", "Havnor", "Stitch & Co", "Velmont"),
        (
            ("running_shoes", 95.0, "Running Shoes", 1.0),
            ("sports_socks", 12.0, "Sports Socks", 0.8),
            ("jackets", 120.0, "Jacket", 1.0),
            ("t_shirts", 22.0, "T-Shirt", 1.2),
            ("handbags", 80.0, "Handbag", 0.8),
        ),
    ),
    "beauty": (
        0.8,
        ("Lumea", "Botanica", "Silkwood", "Pure Ritual"),
        (
            ("shampoo", 9.0, "Shampoo", 0.8),
            ("conditioner", 9.0, "Conditioner", 0.7),
            ("skincare", 28.0, "Face Cream", 1.0),
            ("fragrance", 65.0, "Eau de Parfum", 0.7),
        ),
    ),
    "sports_outdoors": (
        0.9,
        ("Summitek", "Trailhawk", "Aceline", "Zenflow", "Boreal"),
        (
            ("tennis_rackets", 110.0, "Tennis Racket", 0.6),
            ("tennis_balls", 8.0, "Tennis Balls", 0.6),
            ("yoga_mats", 35.0, "Yoga Mat", 0.7),
            ("yoga_blocks", 15.0, "Yoga Block", 0.5),
            ("tents", 180.0, "Tent", 0.5),
            ("sleeping_bags", 90.0, "Sleeping Bag", 0.5),
            ("camping_lamps", 25.0, "Camping Lantern", 0.5),
        ),
    ),
    "books_media": (
        0.7,
        ("Inkwell Press", "Paperlane", "Meeple House", "Northstar"),
        (
            ("novels", 14.0, "Novel", 1.2),
            ("cookbooks", 25.0, "Cookbook", 0.6),
            ("board_games", 38.0, "Board Game", 0.8),
            ("puzzles", 20.0, "Jigsaw Puzzle", 0.6),
        ),
    ),
    "toys_games": (
        0.6,
        ("Brickly", "Tinytown", "Playwise", "Kiddo"),
        (
            ("building_sets", 45.0, "Building Set", 1.0),
            ("dolls", 28.0, "Doll", 0.8),
            ("outdoor_toys", 35.0, "Water Blaster", 0.7),
        ),
    ),
    "grocery": (
        1.0,
        ("Fattoria", "Highland Roast", "Greenleaf", "Mercato", "Ember"),
        (
            ("coffee_beans", 13.0, "Coffee Beans", 0.9),
            ("tea", 8.0, "Tea", 0.8),
            ("pasta", 3.0, "Spaghetti", 0.8),
            ("pasta_sauce", 4.0, "Tomato Sauce", 0.7),
            ("parmesan", 7.0, "Parmigiano", 0.5),
            ("charcoal", 12.0, "Charcoal", 0.5),
            ("snacks", 4.0, "Crisps", 1.0),
        ),
    ),
}

# Planted co-purchase structure by subcategory: when the first item is in a basket the others
# are added with the planted probability.
_PAIRS: tuple[tuple[str, str], ...] = (
    ("smartphones", "phone_cases"),
    ("laptops", "laptop_bags"),
    ("cameras", "memory_cards"),
    ("coffee_machines", "coffee_beans"),
    ("running_shoes", "sports_socks"),
    ("shampoo", "conditioner"),
    ("tennis_rackets", "tennis_balls"),
    ("yoga_mats", "yoga_blocks"),
    ("tea", "mugs"),
    ("cookbooks", "cookware"),
)
_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("bbq_grills", "charcoal", "bbq_tools"),
    ("pasta", "pasta_sauce", "parmesan"),
    ("tents", "sleeping_bags", "camping_lamps"),
)

_MODELS = ("One", "Pro", "Lite", "Max", "Air", "Classic", "Sport", "Eco", "Plus", "Mini", "Ultra", "Go")

PROFILES: tuple[str, ...] = ("standard", "budget", "premium")
"""Shopping profiles: which alias table a customer's picks come from (see :class:`Catalog`)."""


@dataclass(frozen=True)
class Product:
    index: int  # 0-based; product_id is P + zero-padded (index + 1)
    product_id: str
    product_name: str
    category: str
    subcategory: str
    brand: str
    list_price: float
    launch_day: int  # days after start; 0 = in the initial catalogue
    popularity: float


@dataclass(frozen=True)
class Association:
    """A planted association: ``antecedent`` in a basket adds all ``consequents`` with ``probability``."""

    kind: str  # "pair" or "triple"
    antecedent: int
    consequents: tuple[int, ...]
    probability: float

    def items(self, products: tuple[Product, ...]) -> list[str]:
        return [products[i].product_id for i in (self.antecedent, *self.consequents)]


@dataclass(frozen=True)
class Catalog:
    """Products, planted associations and the alias tables used to sample products in Spark.

    Alias table ``t = (era * 3 + profile) * (1 + n_categories) + selector`` (era 0 before
    ``launch_day``, when launched products are not on sale yet, 1 from it; selector 0 = all
    products, ``c + 1`` = only category ``c``) occupies entries ``[t * n, (t + 1) * n)`` of
    ``alias_prob`` and ``alias_index``: draw ``i`` uniform in ``[0, n)``, keep it when a second
    uniform is below ``alias_prob``, else take ``alias_index`` (Vose's alias method: exact, O(1)).
    """

    products: tuple[Product, ...]
    categories: tuple[str, ...]
    category_weights: tuple[float, ...]
    subcategories: tuple[str, ...]
    associations: tuple[Association, ...]
    alias_prob: tuple[float, ...]
    alias_index: tuple[int, ...]
    launch_day: int

    @property
    def size(self) -> int:
        return len(self.products)



def catalog_size(customers: int) -> int:
    """About 200 products at 1,000 customers, growing by 50 per tenfold, at most 500."""
    return int(min(500, 200 + 50 * math.log10(max(customers, 1000) / 1000)))


def build_catalog(*, customers: int, seed: int, days: int) -> Catalog:
    rng = np.random.default_rng([seed, 20240101])
    n = catalog_size(customers)
    sub_specs = [
        (cat, brands, sub, median, noun, share)
        for cat, (_, brands, subs) in _CATEGORIES.items()
        for sub, median, noun, share in subs
    ]
    shares = np.array([s[-1] for s in sub_specs])
    counts = np.maximum(3, np.floor(n * shares / shares.sum())).astype(int)
    order = np.argsort(-shares, kind="stable")
    i = 0
    while counts.sum() < n:
        counts[order[i % len(order)]] += 1
        i += 1
    while counts.sum() > n:
        j = order[i % len(order)]
        if counts[j] > 3:
            counts[j] -= 1
        i += 1

    rows: list[dict] = []
    for (cat, brands, sub, median, noun, _), count in zip(sub_specs, counts, strict=True):
        for k in range(int(count)):
            idx = len(rows)
            brand = brands[int(rng.integers(len(brands)))]
            model = f"{_MODELS[int(rng.integers(len(_MODELS)))]} {int(rng.integers(2, 20))}"
            price = float(median * math.exp(0.35 * rng.standard_normal()))
            price = max(0.99, round(price) - 0.01) if price >= 2 else round(price, 2)
            rows.append(
                dict(index=idx, category=cat, subcategory=sub, brand=brand,
                     name=f"{brand} {noun} {model}", price=price, median=median, k=k)
            )

    ranks = rng.permutation(n) + 1  # 1 = most popular
    associations_raw = [("pair", p) for p in _PAIRS] + [("triple", t) for t in _TRIPLES]
    planted: list[tuple[str, list[int]]] = []
    used_ranks: set[int] = set()

    def set_rank(idx: int, lo: int, hi: int) -> None:
        while True:
            target = int(rng.integers(lo, hi))
            if target not in used_ranks:
                break
        used_ranks.add(target)
        other = int(np.nonzero(ranks == target)[0][0])
        ranks[other], ranks[idx] = ranks[idx], target

    for kind, subs in associations_raw:
        members = []
        for pos, sub in enumerate(subs):
            candidates = [r["index"] for r in rows if r["subcategory"] == sub and r["k"] > 0]
            idx = candidates[int(rng.integers(len(candidates)))]
            members.append(idx)
            if pos == 0:
                set_rank(idx, 5, max(8, int(0.12 * n)))
            else:
                set_rank(idx, int(0.4 * n), int(0.8 * n))
        planted.append((kind, members))
    planted_set = {i for _, m in planted for i in m}

    popularity = 1.0 / ranks.astype(float) ** 0.9
    launch_day = max(1, days // 2)
    launched: set[int] = set()
    for r in rows:
        if r["k"] >= 3 and r["index"] not in planted_set and rng.random() < 0.25:
            launched.add(r["index"])

    products = tuple(
        Product(
            index=r["index"],
            product_id=f"P{r['index'] + 1:05d}",
            product_name=r["name"],
            category=r["category"],
            subcategory=r["subcategory"],
            brand=r["brand"],
            list_price=r["price"],
            launch_day=launch_day if r["index"] in launched else 0,
            popularity=float(popularity[r["index"]]),
        )
        for r in rows
    )
    associations = tuple(
        Association(kind=kind, antecedent=m[0], consequents=tuple(m[1:]),
                    probability=round(float(rng.uniform(0.5, 0.7)), 2))
        for kind, m in planted
    )

    categories = tuple(_CATEGORIES)
    price = np.array([p.list_price for p in products])
    sub_median = np.array([r["median"] for r in rows])
    global_median = float(np.median(price))
    pop = np.array([p.popularity for p in products])
    profile_weights = (
        pop,
        pop * (price / global_median) ** -0.6,
        pop * (price / sub_median) ** 1.5 * (price / global_median) ** 0.25,
    )
    cat_of = np.array([categories.index(p.category) for p in products])
    on_sale_early = np.array([p.launch_day == 0 for p in products])
    probs: list[float] = []
    alias: list[int] = []
    for era in (0, 1):  # before and after the launch day
        for weights in profile_weights:
            for selector in range(1 + len(categories)):
                w = weights if selector == 0 else np.where(cat_of == selector - 1, weights, 0.0)
                if era == 0:
                    w = np.where(on_sale_early, w, 0.0)
                p_tab, a_tab = _alias_table(w)
                probs.extend(float(x) for x in p_tab)
                alias.extend(int(x) for x in a_tab)
    return Catalog(
        products=products,
        categories=categories,
        category_weights=tuple(_CATEGORIES[c][0] for c in categories),
        subcategories=tuple(s[2] for s in sub_specs),
        associations=associations,
        alias_prob=tuple(probs),
        alias_index=tuple(alias),
        launch_day=launch_day,
    )


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method for a discrete distribution proportional to ``weights``."""
    n = len(weights)
    scaled = weights / weights.sum() * n
    prob = np.zeros(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s = small.pop()
        g = large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    for i in large + small:
        prob[i] = 1.0
        alias[i] = i
    return np.round(prob, 12), alias
