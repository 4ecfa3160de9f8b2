"""Behaviour of the synthetic customers: archetypes, calendar, and the run plan (sizes, ids).

The numbers here are the generator's ground truth; tests compare what the generated data shows
against the archetype *ordering* they imply (loyal customers order more often and spend more,
bargain hunters take deeper discounts, churners rate lower, ...), never against these constants.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from crm_spark.generate.catalog import Catalog, build_catalog


@dataclass(frozen=True)
class Archetype:
    name: str
    share: float
    orders_per_year: float
    extra_lines: float  # mean basket lines beyond the first, before planted partners
    profile: int  # index into catalog.PROFILES
    sessions_per_year: float  # browsing sessions that end without a purchase
    abandon_rate: float  # share of those sessions with an add_to_cart (cart abandonment)
    social_share: float  # share of customers active on social media
    social_per_year: float
    feedback_per_year: float
    satisfaction: float  # mean latent satisfaction in [-1, 1]
    return_rate: float
    discount_rate: float  # share of order lines with a discount
    discount_depth: tuple[float, float]
    app_share: float
    store_share: float
    age_mean: float


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype("loyal_high_spender", 0.10, 16.0, 2.0, 2, 13.0, 0.20, 0.60, 9.0, 0.9, 0.65, 0.03, 0.12,
              (0.05, 0.15), 0.45, 0.15, 46.0),
    Archetype("bargain_hunter", 0.20, 9.0, 1.6, 1, 11.7, 0.40, 0.40, 6.0, 0.8, 0.20, 0.07, 0.70,
              (0.15, 0.50), 0.30, 0.05, 34.0),
    Archetype("occasional", 0.37, 3.2, 0.8, 0, 3.9, 0.25, 0.25, 4.0, 0.4, 0.30, 0.05, 0.20,
              (0.05, 0.25), 0.25, 0.20, 42.0),
    Archetype("new_customer", 0.08, 11.0, 1.2, 0, 18.2, 0.30, 0.45, 6.0, 1.0, 0.35, 0.05, 0.25,
              (0.05, 0.25), 0.35, 0.10, 31.0),
    Archetype("churner", 0.25, 8.0, 1.3, 0, 9.1, 0.30, 0.40, 6.0, 1.0, 0.00, 0.08, 0.25,
              (0.05, 0.25), 0.30, 0.10, 40.0),
)
ARCHETYPE_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHETYPES)
CHURNER = ARCHETYPE_NAMES.index("churner")
BARGAIN = ARCHETYPE_NAMES.index("bargain_hunter")
NEW = ARCHETYPE_NAMES.index("new_customer")

# Month (Jan..Dec) and weekday (Spark dayofweek: Sun=1..Sat=7) factors of the shopping intensity.
SEASON: tuple[float, ...] = (0.85, 0.75, 0.85, 0.90, 0.95, 0.90, 0.90, 0.95, 0.95, 1.05, 1.50, 1.75)
WEEKDAY: tuple[float, ...] = (1.15, 0.90, 0.85, 0.90, 0.95, 1.05, 1.25)
PROMO_BOOST = 2.0  # bargain hunters' order intensity on promotion days (Black Friday week, January sale)

SECONDS_PER_DAY = 86_400
CHURN_DECAY_DAYS = (56, 84)  # churners' activity declines over 8..12 weeks before churn_date
CANDIDATE_CAP = 999  # most candidate events per customer and kind (ids stay unique below it)


def is_promo(d: date) -> bool:
    """Black Friday week (Nov 22-30) and the January sale (Jan 2-10)."""
    return (d.month == 11 and d.day >= 22) or (d.month == 1 and 2 <= d.day <= 10)


@dataclass(frozen=True)
class Plan:
    """Everything derived from the arguments before any Spark work: sizes, widths, calendar."""

    customers: int
    seed: int
    start: date
    end: date
    dirty_rate: float
    catalog: Catalog = field(repr=False)

    @classmethod
    def create(cls, *, customers: int, seed: int, start: date, end: date, dirty_rate: float) -> Plan:
        days = (end - start).days + 1
        return cls(customers, seed, start, end, dirty_rate,
                   build_catalog(customers=customers, seed=seed, days=days))

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def start_epoch(self) -> int:
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp())

    @property
    def end_epoch(self) -> int:
        """The last second of the range (end day 23:59:59)."""
        return self.start_epoch + self.days * SECONDS_PER_DAY - 1

    @property
    def months(self) -> list[str]:
        out: list[str] = []
        y, m = self.start.year, self.start.month
        while (y, m) <= (self.end.year, self.end.month):
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    @property
    def day_labels(self) -> list[str]:
        return [(self.start + timedelta(days=i)).isoformat() for i in range(self.days)]

    @property
    def new_customer_window(self) -> int:
        return max(7, min(90, self.days // 4))

    @property
    def partitions(self) -> int:
        """Input partitions of the customer range: a function of the size only, never of the cores."""
        return max(2, min(2000, math.ceil(self.customers / 25_000)))

    def day_factor_max(self) -> float:
        return max(SEASON) * max(WEEKDAY)

    def mean_day_factor(self) -> float:
        """Mean of the normalised season x weekday factor over the range (the thinning acceptance)."""
        total = 0.0
        for i in range(self.days):
            d = self.start + timedelta(days=i)
            total += SEASON[d.month - 1] * WEEKDAY[(d.isoweekday() % 7)]
        return total / self.days / self.day_factor_max()

    def promo_share(self) -> float:
        return sum(is_promo(self.start + timedelta(days=i)) for i in range(self.days)) / self.days

    # Key widths: wide enough for every id at this scale, at least the readable default.
    def width(self, kind: str) -> int:
        n = self.customers
        top = {
            "customer": 2 * n + 1,
            "order": (CANDIDATE_CAP + 1) * n + n,
            "session": 4 * ((CANDIDATE_CAP + 1) * n + n) + 4,
            "interaction": (CANDIDATE_CAP + 1) * n + n,
            "feedback": (CANDIDATE_CAP + 1) * n + n,
        }[kind]
        minimum = {"customer": 7, "order": 9, "session": 10, "interaction": 9, "feedback": 8}[kind]
        return max(minimum, len(str(top)))

    def month_index(self, label: str) -> int:
        return self.months.index(label)


def month_days(label: str) -> int:
    y, m = (int(x) for x in label.split("-"))
    return calendar.monthrange(y, m)[1]
