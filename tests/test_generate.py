"""The synthetic CRM generator: layout, determinism, planted truth, and the dirt answer key.

Everything here is checked by reading the written files back with the standard library (csv,
json), independently of the generator's code; the expectations come from SPEC section 3 and from
the planted truth the generator writes beside the data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path

import pytest

from crm_spark.errors import ConfigError, SourceError
from crm_spark.generate import GenerateSummary, generate_dataset
from conftest import E2E_CUSTOMERS, E2E_END, E2E_START

pytestmark = pytest.mark.slow

# The main dataset is the test session's shared one (conftest.generated); the small ones are own.
START, END, MAIN_CUSTOMERS = E2E_START, E2E_END, E2E_CUSTOMERS
SMALL_CUSTOMERS = 200
# The determinism checks generate three times: one quarter is enough to hold every source and dirt.
QUARTER_END = date(2024, 3, 31)

COLUMNS = {
    "customers": ["customer_id", "first_name", "last_name", "email", "phone", "birth_date", "gender", "city",
                  "country", "signup_date", "acquisition_channel", "updated_at"],
    "products": ["product_id", "product_name", "category", "subcategory", "brand", "list_price"],
    "orders": ["order_id", "customer_id", "order_ts", "channel", "status", "payment_type"],
    "order_items": ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount"],
    "web_events": ["event_id", "customer_id", "session_id", "event_ts", "event_type", "product_id", "page",
                   "duration_sec", "device"],
    "social_interactions": ["interaction_id", "customer_id", "platform", "interaction_type", "sentiment", "ts"],
    "feedback": ["feedback_id", "customer_id", "ts", "channel", "rating", "nps", "category", "text", "resolved"],
}
JSON_SOURCES = {"web_events", "social_interactions"}
TS_COLUMN = {"customers": "updated_at", "orders": "order_ts", "web_events": "event_ts", "social_interactions": "ts",
             "feedback": "ts"}
ARCHETYPES = {"loyal_high_spender", "bargain_hunter", "occasional", "new_customer", "churner"}
CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


# ---------------------------------------------------------------- reading the files back
def parse_ts(text: str) -> datetime | None:
    """Any of the timestamp shapes the dirt may use, as a UTC datetime (None if unparseable)."""
    if text is None or text == "":
        return None
    text = str(text)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%d/%m/%Y %H:%M"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def number(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass
class Record:
    source: str
    file: str
    values: tuple  # CSV: the fields as read; JSON: the raw line
    obj: dict | None = None  # the row as a dict when it is well-formed

    @property
    def key(self) -> str:
        return "|".join(str(self.obj[c]) for c in key_columns(self.source))


def key_columns(source: str) -> list[str]:
    return ["order_id", "line_no"] if source == "order_items" else [COLUMNS[source][0]]


@dataclass
class Data:
    root: Path
    summary: GenerateSummary
    records: dict[str, list[Record]] = field(default_factory=dict)
    headers: dict[str, tuple] = field(default_factory=dict)
    unclosed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, summary: GenerateSummary) -> Data:
        data = cls(root, summary)
        for source, columns in COLUMNS.items():
            data.records[source] = []
            data.unclosed[source] = 0
            for path in sorted((root / source).iterdir()):
                text = path.read_text(encoding="utf-8")
                if source in JSON_SOURCES:
                    for line in text.splitlines():
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError:
                            obj = None
                        data.records[source].append(Record(source, path.name, (line,), obj))
                    continue
                if source == "feedback":  # quoted free text spans lines
                    rows = list(csv.reader(io.StringIO(text, newline="")))
                else:  # one record per line; a line with an unclosed quote stays one record
                    rows = []
                    for line in text.splitlines():
                        if line.count('"') % 2:
                            data.unclosed[source] += 1
                            rows.append(None)
                        else:
                            rows.append(next(csv.reader([line])))
                data.headers[path.name] = tuple(rows[0])
                for fields in rows[1:]:
                    if fields is None:
                        continue
                    obj = dict(zip(columns, fields, strict=True)) if len(fields) == len(columns) else None
                    data.records[source].append(Record(source, path.name, tuple(fields), obj))
        return data

    def rows(self, source: str) -> list[Record]:
        """Well-formed records (right field count, valid JSON)."""
        return [r for r in self.records[source] if r.obj is not None]

    def truth_csv(self, name: str) -> list[dict]:
        with (self.root / "_truth" / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @cached_property
    def archetype(self) -> dict[str, str]:
        return {r["customer_id"]: r["archetype"] for r in self.truth_csv("archetypes.csv")}

    @cached_property
    def churn_date(self) -> dict[str, date]:
        return {r["customer_id"]: date.fromisoformat(r["churn_date"]) for r in self.truth_csv("churners.csv")}

    @cached_property
    def associations(self) -> list[dict]:
        return [json.loads(x) for x in (self.root / "_truth" / "associations.json").read_text().splitlines()]

    @cached_property
    def dirt(self) -> list[dict]:
        return self.truth_csv("dirt.csv")

    def dirt_count(self, source: str, kind: str) -> int:
        return sum(1 for d in self.dirt if d["source"] == source and d["kind"] == kind)

    @cached_property
    def multi_version_keys(self) -> dict[str, set[str]]:
        """Keys present in two or more *different* well-formed lines (newer versions)."""
        out = {}
        for source in COLUMNS:
            versions = defaultdict(set)
            for r in self.rows(source):
                versions[r.key].add(r.values)
            out[source] = {k for k, v in versions.items() if len(v) > 1}
        return out

    @cached_property
    def orders(self) -> dict[str, dict]:
        """One clean order per id: customer, time, status, channel (dirty variants left out)."""
        out: dict[str, dict] = {}
        multi = self.multi_version_keys["orders"]
        for r in self.rows("orders"):
            o = r.obj
            ts = o["order_ts"]
            if r.key in multi or not CANONICAL_TS.match(ts) or o["customer_id"] not in self.archetype:
                continue
            out[o["order_id"]] = {"customer_id": o["customer_id"], "ts": parse_ts(ts), "status": o["status"],
                                  "channel": o["channel"]}
        return out

    @cached_property
    def items(self) -> list[dict]:
        """Clean order lines of clean orders, with numbers parsed."""
        products = {r.obj["product_id"] for r in self.rows("products")}
        out = []
        for r in self.rows("order_items"):
            o = r.obj
            qty, price, disc = number(o["quantity"]), number(o["unit_price"]), number(o["discount"])
            if (o["order_id"] not in self.orders or qty is None or price is None or disc is None or qty <= 0
                    or price <= 0 or o["product_id"] not in products):
                continue
            out.append({**o, "quantity": qty, "unit_price": price, "discount": disc})
        return out

    @cached_property
    def baskets(self) -> dict[str, set[str]]:
        b: dict[str, set[str]] = defaultdict(set)
        for it in self.items:
            if self.orders[it["order_id"]]["status"] == "completed":
                b[it["order_id"]].add(it["product_id"])
        return b

    @cached_property
    def customers(self) -> dict[str, dict]:
        out = {}
        for r in self.rows("customers"):
            if r.obj["customer_id"] in self.archetype:
                out.setdefault(r.obj["customer_id"], r.obj)
        return out


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- fixtures: generate once per module
@pytest.fixture(scope="module")
def data(generated: tuple[Path, GenerateSummary]) -> Data:
    return Data.load(*generated)


@pytest.fixture(scope="module")
def small_dirty(spark, tmp_path_factory) -> tuple[Path, GenerateSummary]:
    root = tmp_path_factory.mktemp("small") / "raw"
    return root, generate_dataset(spark, str(root), customers=SMALL_CUSTOMERS, seed=3, start=START, end=QUARTER_END,
                                  dirty_rate=0.05)


@pytest.fixture(scope="module")
def clean(spark, tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("clean") / "raw"
    summary = generate_dataset(spark, str(root), customers=SMALL_CUSTOMERS, seed=5, start=START, end=END,
                               dirty_rate=0.0)
    return Data.load(root, summary)


# ---------------------------------------------------------------- layout and answer-key files
def test_layout_headers_and_json_keys(data: Data) -> None:
    months = sorted({f"{START + timedelta(days=i):%Y-%m}" for i in range((END - START).days + 1)})
    for source in ("orders", "order_items", "feedback"):
        assert sorted(p.name for p in (data.root / source).iterdir()) == [f"{source}-{m}.csv" for m in months]
    for source in JSON_SOURCES:
        assert sorted(p.name for p in (data.root / source).iterdir()) == [f"{source}-{m}.json" for m in months]
    assert sorted(p.name for p in (data.root / "customers").iterdir()) == sorted(
        ["customers-snapshot-2024-01-01.csv"] + [f"customers-{m}.csv" for m in months])
    assert len(list((data.root / "products").iterdir())) == 2
    for name, header in data.headers.items():
        source = next(s for s in COLUMNS if name.startswith(s + "-") and not name.startswith("order_items-")
                      or (s == "order_items" and name.startswith("order_items-")))
        assert list(header) == COLUMNS[source], name
    for source in JSON_SOURCES:
        keys = {tuple(r.obj) for r in data.rows(source)}
        assert keys == {tuple(COLUMNS[source])}
    assert data.summary.files == {s: len(list((data.root / s).iterdir())) for s in COLUMNS}
    assert not [p for p in data.root.rglob("*") if p.name.startswith((".", "_SUCCESS", "part-"))]


def test_rows_written_match_summary_and_scale(data: Data) -> None:
    written = {s: len(data.records[s]) + data.unclosed[s] for s in COLUMNS}
    assert written == data.summary.rows
    manifest = json.loads((data.root / "_truth" / "manifest.json").read_text())
    assert {s: v["rows"] for s, v in manifest["sources"].items()} == data.summary.rows
    n = MAIN_CUSTOMERS
    assert len(data.archetype) == n
    assert set(data.customers) == set(data.archetype)  # every customer is exported
    assert 15 * n <= data.summary.rows["order_items"] <= 40 * n
    assert 60 * n <= data.summary.rows["web_events"] <= 160 * n
    assert 200 <= data.summary.rows["products"] <= 520
    assert data.summary.rows["social_interactions"] > n and data.summary.rows["feedback"] > n / 2


def test_truth_files(data: Data) -> None:
    assert set(data.archetype.values()) == ARCHETYPES
    assert set(data.churn_date) == {c for c, a in data.archetype.items() if a == "churner"}
    churn_dates = sorted(data.churn_date.values())
    assert churn_dates[0] < START + timedelta(days=120) and churn_dates[-1] > END - timedelta(days=60)
    for as_of in (END - timedelta(days=365), END - timedelta(days=200), END - timedelta(days=91)):
        assert sum(as_of < d <= as_of + timedelta(days=90) for d in churn_dates) >= 10
    kinds = Counter(a["kind"] for a in data.associations)
    assert kinds == {"pair": 10, "triple": 3}
    products = {r.obj["product_id"] for r in data.rows("products")}
    for a in data.associations:
        assert 0.5 <= a["probability"] <= 0.7
        assert a["items"] == [a["antecedent"], *a["consequents"]] and set(a["items"]) <= products
    assert len({p for a in data.associations for p in a["items"]}) == 10 * 2 + 3 * 3
    summary_rows = data.truth_csv("dirt_summary.csv")
    by_kind = Counter()
    for row in summary_rows:
        assert int(row["count"]) == data.dirt_count(row["source"], row["kind"])
        by_kind[row["kind"]] += int(row["count"])
    assert dict(by_kind) == {k: v for k, v in data.summary.dirt.items()}
    assert len(data.dirt) == sum(by_kind.values()) > 0
    assert set(data.dirt[0]) == {"source", "kind", "key", "file", "column", "mode", "detail"}


# ---------------------------------------------------------------- planted structure
def test_planted_associations_have_high_lift(data: Data) -> None:
    baskets = list(data.baskets.values())
    n = len(baskets)
    count = Counter(p for b in baskets for p in b)
    for a in data.associations:
        ante = a["antecedent"]
        assert count[ante] >= 20, a
        for cons in a["consequents"]:
            both = sum(1 for b in baskets if ante in b and cons in b)
            lift = both * n / (count[ante] * count[cons])
            confidence = both / count[ante]
            assert lift > 3, (a, lift)
            assert confidence > 0.35, (a, confidence)
    # an unrelated popular pair is not planted: its lift stays near 1
    top = [p for p, _ in count.most_common(2)]
    both = sum(1 for b in baskets if top[0] in b and top[1] in b)
    assert both * n / (count[top[0]] * count[top[1]]) < 3


def test_churners_decay_then_stop(data: Data) -> None:
    late, early, after = 0, 0, 0
    late_weeks, early_weeks = 0.0, 0.0
    by_customer = defaultdict(list)
    for o in data.orders.values():
        by_customer[o["customer_id"]].append(o["ts"].date())
    for cid, churn in data.churn_date.items():
        signup = date.fromisoformat(data.customers[cid]["signup_date"])
        begin = max(signup, START)
        decay_begin = churn - timedelta(weeks=8)
        early_begin = max(begin, decay_begin - timedelta(weeks=26))
        if early_begin >= decay_begin or decay_begin < begin:
            continue
        days = by_customer[cid]
        late += sum(decay_begin <= d < churn for d in days)
        early += sum(early_begin <= d < decay_begin for d in days)
        after += sum(d >= churn for d in days)
        late_weeks += 8
        early_weeks += (decay_begin - early_begin).days / 7
    assert early > 100
    assert after == 0
    assert late / late_weeks < 0.75 * (early / early_weeks)
    # no activity at all after churn_date (a session started the evening before may end after midnight)
    for source, column in (("web_events", "event_ts"), ("social_interactions", "ts"), ("feedback", "ts")):
        for r in data.rows(source):
            cid = r.obj["customer_id"]
            ts = parse_ts(r.obj[column])
            if cid in data.churn_date and ts is not None:
                assert ts.date() <= data.churn_date[cid], (source, r.obj)


def test_archetypes_behave_differently(data: Data) -> None:
    spend, orders, discount = defaultdict(float), Counter(), defaultdict(list)
    for it in data.items:
        o = data.orders[it["order_id"]]
        if o["status"] != "completed":
            continue
        spend[o["customer_id"]] += it["quantity"] * it["unit_price"] * (1 - it["discount"])
        discount[data.archetype[o["customer_id"]]].append(it["discount"])
    for o in data.orders.values():
        if o["status"] == "completed":
            orders[o["customer_id"]] += 1

    def years(cid: str) -> float:
        begin = max(date.fromisoformat(data.customers[cid]["signup_date"]), START)
        stop = data.churn_date.get(cid, END + timedelta(days=1))
        return max((stop - begin).days, 30) / 365

    def mean_rate(values: dict, archetype: str) -> float:
        ids = [c for c, a in data.archetype.items() if a == archetype]
        return statistics.mean(values.get(c, 0) / years(c) for c in ids)

    assert mean_rate(spend, "loyal_high_spender") > 2 * mean_rate(spend, "bargain_hunter")
    assert mean_rate(spend, "bargain_hunter") > mean_rate(spend, "occasional")
    assert mean_rate(orders, "loyal_high_spender") > 3 * mean_rate(orders, "occasional")
    assert statistics.mean(discount["bargain_hunter"]) > 2 * statistics.mean(discount["loyal_high_spender"])
    assert statistics.mean(discount["bargain_hunter"]) > 2 * statistics.mean(discount["occasional"])
    # spend is heavy-tailed: the top 10% of customers bring far more than 10% of revenue
    totals = sorted(spend.values(), reverse=True)
    assert sum(totals[: len(data.archetype) // 10]) > 0.3 * sum(totals)
    # new customers signed up in the last ~90 days; nobody else did
    for cid, a in data.archetype.items():
        signup = date.fromisoformat(data.customers[cid]["signup_date"])
        if a == "new_customer":
            assert signup >= END - timedelta(days=91)
    # satisfaction: churners rate lower, give lower NPS, complain more and post more negatively
    ratings, nps, complaints = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in data.rows("feedback"):
        a = data.archetype.get(r.obj["customer_id"])
        rating, score = number(r.obj["rating"]), number(r.obj["nps"])
        if a and rating is not None and 1 <= rating <= 5 and score is not None and 0 <= score <= 10:
            ratings[a].append(rating)
            nps[a].append(score)
            complaints[a].append(r.obj["category"] == "complaint")
    assert statistics.mean(ratings["churner"]) < statistics.mean(ratings["loyal_high_spender"]) - 0.5
    assert statistics.mean(nps["churner"]) < statistics.mean(nps["loyal_high_spender"]) - 1.5
    assert statistics.mean(complaints["churner"]) > statistics.mean(complaints["loyal_high_spender"]) + 0.1
    sentiment = defaultdict(list)
    for r in data.rows("social_interactions"):
        a, s = data.archetype.get(r.obj["customer_id"]), number(r.obj["sentiment"])
        if a and s is not None and -1 <= s <= 1:
            sentiment[a].append(s)
    assert statistics.mean(sentiment["churner"]) < statistics.mean(sentiment["loyal_high_spender"]) - 0.3


def test_seasonality_and_weekly_cycle(data: Data) -> None:
    per_day = Counter(o["ts"].date() for o in data.orders.values())
    def rate(days: list[date]) -> float:
        return sum(per_day[d] for d in days) / len(days)
    all_days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    peak = [d for d in all_days if d.month in (11, 12)]
    rest = [d for d in all_days if 2 <= d.month <= 9]
    assert rate(peak) > 1.3 * rate(rest)
    saturdays = [d for d in all_days if d.weekday() == 5]
    tuesdays = [d for d in all_days if d.weekday() == 1]
    assert rate(saturdays) > 1.15 * rate(tuesdays)


def test_browsing_precedes_purchases_and_carts_are_abandoned(data: Data) -> None:
    checkouts = defaultdict(list)
    carts_by_session, checkout_sessions, sessions = defaultdict(set), set(), set()
    anonymous = 0
    for r in data.rows("web_events"):
        e = r.obj
        if e["customer_id"] is None:
            anonymous += 1
            continue
        ts = parse_ts(e["event_ts"])
        sessions.add(e["session_id"])
        if e["event_type"] == "checkout" and ts is not None:
            checkouts[e["customer_id"]].append((ts, e["session_id"]))
            checkout_sessions.add(e["session_id"])
        if e["event_type"] == "add_to_cart":
            carts_by_session[e["session_id"]].add(e["product_id"])
    lines = defaultdict(set)
    for it in data.items:
        lines[it["order_id"]].add(it["product_id"])
    online = [(oid, o) for oid, o in data.orders.items() if o["channel"] in ("web", "app")]
    preceded, carted = 0, 0
    for oid, o in online:
        match = [s for ts, s in checkouts[o["customer_id"]] if timedelta(0) <= o["ts"] - ts <= timedelta(minutes=5)]
        preceded += bool(match)
        carted += bool(match) and lines[oid] <= carts_by_session[match[0]]
    assert preceded > 0.97 * len(online)
    assert carted > 0.9 * len(online)
    abandoned = [s for s in carts_by_session if s not in checkout_sessions]
    assert len(abandoned) > 0.1 * len(carts_by_session)
    assert len(sessions - checkout_sessions) > 1.2 * len(checkout_sessions)  # most sessions end without buying
    assert anonymous > 0.01 * data.summary.rows["web_events"]
    stores = [o for o in data.orders.values() if o["channel"] == "store"]
    assert stores and not any(
        timedelta(0) <= o["ts"] - ts <= timedelta(minutes=5) for o in stores[:200] for ts, _ in checkouts[o["customer_id"]])


# ---------------------------------------------------------------- dirt: the data show what the key says
def detected_dirt(data: Data) -> Counter:
    """Defects found by reading the files, by (source, kind)."""
    found: Counter = Counter()
    products = {r.obj["product_id"] for r in data.rows("products")}
    customers = set(data.archetype)
    for source, columns in COLUMNS.items():
        records = data.records[source]
        if source in JSON_SOURCES:
            found[source, "malformed_json"] = sum(r.obj is None for r in records)
        else:
            found[source, "malformed_unclosed_quote"] = data.unclosed[source]
            found[source, "malformed_field_count"] = sum(r.obj is None for r in records)
        per_file = Counter((r.file, r.values) for r in records)
        found[source, "duplicate_row"] = sum(c - 1 for c in per_file.values())
        rows = data.rows(source)
        if source != "customers":  # customers also have legitimate later versions (moves, new phones)
            found[source, "newer_version"] = len(data.multi_version_keys[source])
        for r in rows:
            o = r.obj
            found[source, "na_value"] += sum(v == "N/A" for v in o.values())
            found[source, "decimal_comma"] += sum(isinstance(v, str) and bool(DECIMAL_COMMA.match(v))
                                                  for v in o.values())
            if source in TS_COLUMN and not CANONICAL_TS.match(str(o[TS_COLUMN[source]])):
                found[source, "timestamp_format"] += 1
                assert parse_ts(o[TS_COLUMN[source]]) is not None, o
    numeric_empty = {"order_items": ("quantity", "unit_price"), "feedback": ("rating", "nps")}
    for source, cols in numeric_empty.items():
        found[source, "empty_numeric"] = sum(r.obj[c] == "" for r in data.rows(source) for c in cols)
    for r in data.rows("feedback"):
        rating, nps = number(r.obj["rating"]), number(r.obj["nps"])
        found["feedback", "out_of_range"] += (rating is not None and not 1 <= rating <= 5) + (
            nps is not None and not 0 <= nps <= 10)
    for r in data.rows("social_interactions"):
        s = number(r.obj["sentiment"])
        found["social_interactions", "out_of_range"] += s is not None and abs(s) > 1
    for r in data.rows("web_events"):
        d = number(r.obj["duration_sec"])
        found["web_events", "out_of_range"] += d is not None and d < 0
        found["web_events", "unknown_foreign_key"] += r.obj["product_id"] is not None and r.obj["product_id"] not in products
    for r in data.rows("order_items"):
        q, p = number(r.obj["quantity"]), number(r.obj["unit_price"])
        found["order_items", "negative_quantity"] += q is not None and q < 0
        found["order_items", "zero_price"] += p == 0
        found["order_items", "unknown_foreign_key"] += r.obj["product_id"] not in products
    for r in data.rows("orders"):
        cid = r.obj["customer_id"]
        found["orders", "missing_customer_id"] += cid == ""
        found["orders", "unknown_foreign_key"] += cid != "" and cid not in customers
    # late rows: the timestamp's month is before the file's month (newer versions excluded)
    order_month = {}
    for r in data.rows("orders"):
        ts = parse_ts(r.obj["order_ts"])
        order_month.setdefault(r.obj["order_id"], ts.strftime("%Y-%m"))
    for source in ("orders", "web_events", "social_interactions", "feedback", "order_items"):
        multi = data.multi_version_keys[source]
        for r in data.rows(source):
            if r.key in multi:
                continue
            if source == "order_items":
                month = order_month[r.obj["order_id"]]
            else:
                ts = parse_ts(r.obj[TS_COLUMN[source]])
                month = ts.strftime("%Y-%m")
            file_month = re.search(r"(\d{4}-\d{2})", r.file).group(1)
            assert file_month >= month, r
            found[source, "late_arriving"] += file_month > month
    return +found


def test_dirt_found_in_the_data_matches_the_answer_key(data: Data) -> None:
    found = detected_dirt(data)
    expected = Counter()
    for d in data.dirt:
        if (d["source"], d["kind"]) != ("customers", "newer_version"):  # legit updates look the same
            expected[d["source"], d["kind"]] += 1
    assert found == +expected
    kinds = {k for _, k in expected}
    assert kinds >= {"duplicate_row", "newer_version", "malformed_field_count", "malformed_unclosed_quote",
                     "malformed_json", "na_value", "decimal_comma", "empty_numeric", "out_of_range",
                     "negative_quantity", "zero_price", "missing_customer_id", "unknown_foreign_key",
                     "timestamp_format", "late_arriving"}
    # negative quantities are never returns: their orders are completed
    negative = {r.obj["order_id"] for r in data.rows("order_items") if (number(r.obj["quantity"]) or 0) < 0}
    statuses = {r.obj["order_id"]: r.obj["status"] for r in data.rows("orders")}
    assert negative and all(statuses[o] == "completed" for o in negative)


def test_dirt_records_point_at_their_lines(data: Data) -> None:
    texts: dict[tuple[str, str], str] = {}
    for d in data.dirt:
        assert d["mode"] in ("in_place", "extra")
        path = data.root / d["source"] / d["file"]
        text = texts.setdefault((d["source"], d["file"]), path.read_text(encoding="utf-8"))
        key = d["key"].split("|")[0]
        assert key in text, d
        if d["kind"] == "late_arriving":
            assert d["detail"] < d["file"] and d["detail"].startswith(d["source"])
        if d["kind"] in ("duplicate_row", "newer_version", "malformed_json"):
            assert d["mode"] == "extra"


def test_clean_dataset_has_no_dirt(clean: Data) -> None:
    assert clean.dirt == []
    assert not detected_dirt(clean)
    assert all(v == 0 for v in clean.summary.dirt.values())
    assert sum(clean.unclosed.values()) == 0
    assert all(r.obj is not None for rs in clean.records.values() for r in rs)
    # customers get later versions (a newer updated_at and a changed field) as legitimate updates
    versions = defaultdict(list)
    for r in clean.rows("customers"):
        versions[r.obj["customer_id"]].append(r.obj)
    updated = [v for v in versions.values() if len(v) > 1]
    assert len(updated) > 0.05 * len(versions)
    for old, new in (sorted(v, key=lambda o: o["updated_at"]) for v in updated):
        assert new["updated_at"] > old["updated_at"] and new != {**old, "updated_at": new["updated_at"]}
    # free text with commas, quotes and line breaks is legitimate and survives CSV quoting
    texts = [r.obj["text"] for r in clean.rows("feedback")]
    assert any("\n" in t for t in texts) and any('"' in t for t in texts) and any("," in t for t in texts)


# ---------------------------------------------------------------- determinism and arguments
def test_same_arguments_give_identical_files(spark, small_dirty, tmp_path) -> None:
    first_root, first = small_dirty
    again = tmp_path / "again"
    second = generate_dataset(spark, str(again), customers=SMALL_CUSTOMERS, seed=3, start=START, end=QUARTER_END,
                              dirty_rate=0.05)
    assert second.rows == first.rows and sum(first.dirt.values()) > 0
    assert file_digests(again) == file_digests(first_root)
    other = tmp_path / "other_seed"
    generate_dataset(spark, str(other), customers=SMALL_CUSTOMERS, seed=4, start=START, end=QUARTER_END, dirty_rate=0.05)
    assert file_digests(other) != file_digests(first_root)


def test_refuses_a_non_empty_output_and_bad_arguments(spark, small_dirty) -> None:
    root, _ = small_dirty
    with pytest.raises(SourceError, match="not empty"):
        generate_dataset(spark, str(root), customers=SMALL_CUSTOMERS, seed=3)
    with pytest.raises(ConfigError):
        generate_dataset(spark, str(root.parent / "x"), customers=10)
    with pytest.raises(ConfigError):
        generate_dataset(spark, str(root.parent / "y"), customers=500, start=END, end=START)
    with pytest.raises(ConfigError):
        generate_dataset(spark, str(root.parent / "z"), customers=500, dirty_rate=0.9)
