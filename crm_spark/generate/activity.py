"""Spark frames of the simulated world: customers (with latent traits) and what they do.

Grain of each frame, all built from ``spark.range`` with hash-based draws (see ``_sql``):

- :meth:`World.customers` - one row per customer: archetype, signup, churn, latent traits.
- :meth:`World.orders` - one row per order, with the basket as an array of product indexes.
- :meth:`World.order_items` - one row per order line.
- :meth:`World.purchase_events`, :meth:`World.browse_events`, :meth:`World.anonymous_events` -
  one row per web event: browsing, add_to_cart and checkout shortly before each web/app order;
  sessions without a purchase (some abandon a cart); visitors who are not logged in.
- :meth:`World.social`, :meth:`World.feedback` - one row per interaction / feedback.
- :meth:`World.customer_records` - customer rows as exported (signup version and updates).

Event times come from a thinned Poisson process per customer: candidates uniform over the
customer's active window, each kept with probability proportional to season x weekday x
(promotion) x (churn decay). Times are epoch seconds (``ts``), days are offsets from start.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession

from crm_spark.generate import people
from crm_spark.generate._sql import Rng, clamp, dbl, num_array, pick, q, str_array, weighted_index
from crm_spark.generate.model import (
    ARCHETYPES,
    BARGAIN,
    CANDIDATE_CAP,
    CHURN_DECAY_DAYS,
    CHURNER,
    NEW,
    PROMO_BOOST,
    SEASON,
    SECONDS_PER_DAY,
    WEEKDAY,
    Plan,
)

_AFFINITY = 0.45  # share of product picks drawn from the customer's favourite category


def _email_part(name: str) -> str:
    return "".join(ch for ch in name.lower() if "a" <= ch <= "z")


def _add(df: DataFrame, **columns: str) -> DataFrame:
    """``df`` plus named SQL expression columns (one analysis step)."""
    return df.selectExpr("*", *[f"{expr} AS {name}" for name, expr in columns.items()])


# Mean seconds on a page before the next event, by event type.
_DWELL = {"page_view": 28, "search": 14, "product_view": 61, "add_to_cart": 8}


class World:
    """Builds the frames of one generation run (a plan plus a session)."""

    def __init__(self, spark: SparkSession, plan: Plan) -> None:
        self.spark = spark
        self.plan = plan
        self.r = Rng(plan.seed)
        cat = plan.catalog
        self.start = f"DATE'{plan.start.isoformat()}'"
        self.price = num_array([p.list_price for p in cat.products], "DOUBLE")
        self.subcat = str_array([p.subcategory.replace("_", "+") for p in cat.products])
        self.alias_prob = num_array(cat.alias_prob, "DOUBLE")
        self.alias_index = num_array(cat.alias_index, "INT")
        pprob = [0.0] * cat.size
        for a in cat.associations:
            pprob[a.antecedent] = a.probability
        self.partner_prob = num_array(pprob, "DOUBLE")
        entries = [f"{a.antecedent}, array({', '.join(str(c) for c in a.consequents)})" for a in cat.associations]
        self.partners = f"map({', '.join(entries)})"

    # ---------------------------------------------------------------- helpers
    def ap(self, attr: str, arch: str = "arch") -> str:
        """An archetype parameter for the row's archetype."""
        return f"element_at({num_array([getattr(a, attr) for a in ARCHETYPES], 'DOUBLE')}, {arch} + 1)"

    def date_of(self, day: str) -> str:
        return f"date_add({self.start}, CAST({day} AS INT))"

    def day_factor(self, day: str) -> str:
        """Season x weekday intensity of a day, normalised to at most 1."""
        d = self.date_of(day)
        return (f"(element_at({num_array(SEASON, 'DOUBLE')}, month({d})) * "
                f"element_at({num_array(WEEKDAY, 'DOUBLE')}, dayofweek({d})) / {dbl(self.plan.day_factor_max())})")

    def is_promo(self, day: str) -> str:
        d = self.date_of(day)
        return f"((month({d}) = 11 AND dayofmonth({d}) >= 22) OR (month({d}) = 1 AND dayofmonth({d}) BETWEEN 2 AND 10))"

    @staticmethod
    def churn_ramp(day: str) -> str:
        """0 before a churner's decay starts, rising to 1 at churn_date; 0 for everyone else."""
        ramp = f"(({day}) - decay_start) / CAST(churn_day - decay_start AS DOUBLE)"
        return f"(CASE WHEN arch = {CHURNER} THEN {clamp(ramp, '0.0D', '1.0D')} ELSE 0.0D END)"

    def decay(self, day: str) -> str:
        return f"(1.0D - 0.9D * {self.churn_ramp(day)})"

    def satisfaction(self, day: str) -> str:
        """Latent satisfaction on a day: churners sour by up to 0.9 over their decay window."""
        return clamp(f"sat0 - 0.9D * {self.churn_ramp(day)}", "-1.0D", "1.0D")

    def time_of_day(self, salt: str, key: str, store: str | None = None) -> str:
        """Seconds after midnight: online peaks in the evening, stores trade 9:00-20:00."""
        r = self.r
        evening = f"{r.u(salt + ':mix', key)} < 0.55D"
        online = (f"pmod(CAST(CASE WHEN {evening} THEN {dbl(20.5 * 3600)} + {dbl(2.5 * 3600)} * {r.normal(salt + ':z', key)}"
                  f" ELSE {dbl(13.0 * 3600)} + {dbl(3.2 * 3600)} * {r.normal(salt + ':z', key)} END AS BIGINT), {SECONDS_PER_DAY})")
        if store is None:
            return online
        in_store = clamp(f"CAST({dbl(14.5 * 3600)} + {dbl(2.5 * 3600)} * {r.normal(salt + ':s', key)} AS BIGINT)",
                         "32400L", "72000L")
        return f"(CASE WHEN {store} THEN {in_store} ELSE {online} END)"

    def epoch(self, day: str, sod: str) -> str:
        return f"({self.plan.start_epoch}L + CAST({day} AS BIGINT) * {SECONDS_PER_DAY} + {sod})"

    def pick_product(self, day: str, salt: str, *keys: str, profile: str = "profile", fav: str = "fav_cat") -> str:
        """A product on sale that day, from the alias table of the profile / favourite category."""
        cat = self.plan.catalog
        n = cat.size
        width = 1 + len(cat.categories)
        r = self.r
        era = f"CASE WHEN {day} >= {cat.launch_day} THEN {3 * width} ELSE 0 END"
        table = f"({era} + {profile} * {width} + CASE WHEN {r.u(salt + ':t', *keys)} < {dbl(_AFFINITY)} THEN {fav} + 1 ELSE 0 END)"
        local = f"CAST(least(floor({r.u(salt + ':a', *keys)} * {n}), {n - 1}) AS INT)"
        gi = f"CAST({table} * {n} + {local} + 1 AS INT)"
        return (f"(CASE WHEN {r.u(salt + ':b', *keys)} < element_at({self.alias_prob}, {gi}) THEN {local} "
                f"ELSE element_at({self.alias_index}, {gi}) END)")

    @staticmethod
    def product_id(idx: str) -> str:
        return f"concat('P', lpad(CAST({idx} + 1 AS STRING), 5, '0'))"

    def key(self, prefix: str, kind: str, num: str) -> str:
        return f"concat({q(prefix)}, lpad(CAST({num} AS STRING), {self.plan.width(kind)}, '0'))"

    # ---------------------------------------------------------------- customers
    def customers(self) -> DataFrame:
        """One row per customer with latent traits (archetype, churn, satisfaction, tastes)."""
        p, r = self.plan, self.r
        days = p.days
        churn_lo = max(1, min(56, days // 4))
        lo, hi = CHURN_DECAY_DAYS
        df = self.spark.range(1, p.customers + 1, 1, p.partitions).selectExpr("id AS cnum")
        df = _add(df, _u_arch=r.u("archetype", "cnum"))
        df = _add(df, arch=weighted_index([a.share for a in ARCHETYPES], "_u_arch"))
        df = _add(df, churn_day=f"CASE WHEN arch = {CHURNER} THEN {churn_lo} + {r.below(days - churn_lo, 'churn_day', 'cnum')} END")
        df = _add(
            df,
            decay_start=f"churn_day - ({lo} + {r.below(hi - lo + 1, 'decay', 'cnum')})",
            signup_day=(
                f"CAST(CASE WHEN arch = {NEW} THEN {days - 1} - {r.below(p.new_customer_window, 'signup', 'cnum')} "
                f"WHEN arch = {CHURNER} THEN churn_day - 120 - {r.below(1095, 'signup', 'cnum')} "
                f"ELSE -1095 + {r.below(max(1, days - 120 + 1095), 'signup', 'cnum')} END AS INT)"
            ),
            _u_fav=r.u("fav_cat", "cnum"),
            _u_dev=r.u("device", "cnum"),
            _u_plat=r.u("platform", "cnum"),
            _z_sat=r.normal("satisfaction", "cnum"),
        )
        profile = f"element_at({num_array([a.profile for a in ARCHETYPES], 'INT')}, arch + 1)"
        return df.selectExpr(
            "cnum", "arch", "churn_day", "decay_start", "signup_day",
            "greatest(signup_day, 0) AS win_a",
            f"coalesce(churn_day, {days}) AS win_b",
            f"{self.key('C', 'customer', 'cnum')} AS customer_id",
            f"{pick([a.name for a in ARCHETYPES], 'arch')} AS archetype",
            f"{profile} AS profile",
            f"{r.lognormal_unit_mean(0.5, 'activity', 'cnum')} AS activity",
            f"{clamp(self.ap('satisfaction') + ' + 0.3D * _z_sat', '-1.0D', '1.0D')} AS sat0",
            f"{weighted_index(p.catalog.category_weights, '_u_fav')} AS fav_cat",
            f"{pick(people.DEVICES, weighted_index(people.DEVICE_WEIGHTS, '_u_dev'))} AS device",
            f"{r.u('social', 'cnum')} < {self.ap('social_share')} AS social_active",
            f"{weighted_index(people.PLATFORM_WEIGHTS, '_u_plat')} AS platform_pref",
        )

    def occurrences(self, cust: DataFrame, *, salt: str, per_year: str,
                    extra: Callable[[str], str] | None = None, extra_mean: str = "1.0D") -> DataFrame:
        """Thinned Poisson process: rows ``(customer columns, k, day)``, about ``per_year`` a year."""
        r = self.r
        norm = f"({dbl(self.plan.mean_day_factor())} * ({extra_mean}))"
        expected = f"({per_year}) * activity * (win_b - win_a) / 365.0D / {norm}"
        n = f"CASE WHEN win_b > win_a THEN CAST(least(floor({expected} + {r.u(salt + ':n', 'cnum')}), {CANDIDATE_CAP}) AS INT) ELSE 0 END"
        df = _add(cust, _n=n)
        df = _add(df, k="explode(slice(sequence(0, greatest(_n, 1) - 1), 1, _n))")
        df = _add(df, day=f"CAST(win_a + {r.below('win_b - win_a', salt + ':day', 'cnum', 'k')} AS INT)")
        factor = self.day_factor("day") + (f" * {extra('day')}" if extra else "")
        return df.filter(f"{r.u(salt + ':keep', 'cnum', 'k')} < {factor}").drop("_n")

    # ---------------------------------------------------------------- orders
    def orders(self, cust: DataFrame) -> DataFrame:
        """One row per order: ids, time, channel, status, payment and the basket (``prods``)."""
        p, r = self.plan, self.r
        promo_mean = p.promo_share() + (1 - p.promo_share()) / PROMO_BOOST

        def extra(day: str) -> str:
            promo = f"(CASE WHEN arch = {BARGAIN} AND NOT {self.is_promo(day)} THEN {dbl(1 / PROMO_BOOST)} ELSE 1.0D END)"
            return f"{promo} * {self.decay(day)}"

        occ = self.occurrences(cust, salt="order", per_year=self.ap("orders_per_year"), extra=extra,
                               extra_mean=f"CASE WHEN arch = {BARGAIN} THEN {dbl(promo_mean)} ELSE 1.0D END")
        o = _add(occ, order_num=f"CAST(k AS BIGINT) * {p.customers} + cnum")
        o = _add(o, _u_ch=r.u("channel", "order_num"), _u_st=r.u("status", "order_num"),
                 _u_pay=r.u("pay", "order_num"),
                 n_base=f"least(12, 1 + {r.geometric(self.ap('extra_lines'), 'lines', 'order_num')})")
        o = _add(o, channel=(f"CASE WHEN _u_ch < {self.ap('store_share')} THEN 'store' "
                             f"WHEN _u_ch < {self.ap('store_share')} + {self.ap('app_share')} THEN 'app' ELSE 'web' END"))
        ret = f"{self.ap('return_rate')} * (1.0D + 1.5D * {self.churn_ramp('day')})"
        base = f"transform(sequence(0, n_base - 1), i -> {self.pick_product('day', 'pick', 'order_num', 'i')})"
        partnered = (f"transform(array_distinct({base}), x -> CASE WHEN {r.u('partner', 'order_num', 'x')} < "
                     f"element_at({self.partner_prob}, x + 1) THEN concat(array(x), "
                     f"coalesce(try_element_at({self.partners}, x), CAST(array() AS ARRAY<INT>))) ELSE array(x) END)")
        store = "channel = 'store'"
        payment = (f"CASE WHEN {store} THEN {pick(people.STORE_PAYMENTS, weighted_index(people.STORE_PAYMENT_WEIGHTS, '_u_pay'))} "
                   f"ELSE {pick(people.WEB_PAYMENTS, weighted_index(people.WEB_PAYMENT_WEIGHTS, '_u_pay'))} END")
        return o.selectExpr(
            "cnum", "customer_id", "arch", "profile", "fav_cat", "device", "day", "order_num", "channel",
            f"{self.epoch('day', self.time_of_day('order_tod', 'order_num', store=store))} AS ts",
            f"{self.key('O', 'order', 'order_num')} AS order_id",
            f"CASE WHEN _u_st < 0.03D THEN 'cancelled' WHEN _u_st < 0.03D + {ret} THEN 'returned' ELSE 'completed' END AS status",
            f"{payment} AS payment_type",
            f"array_distinct(flatten({partnered})) AS prods",
        )

    def order_items(self, orders: DataFrame) -> DataFrame:
        """One row per order line: product, quantity, list price, discount fraction."""
        r = self.r
        items = orders.selectExpr("order_id", "order_num", "ts", "day", "arch", "status",
                                  "posexplode(prods) AS (pos, pidx)")
        items = _add(items, price=f"element_at({self.price}, pidx + 1)")
        keys = ("order_num", "pos")
        lo = f"element_at({num_array([a.discount_depth[0] for a in ARCHETYPES], 'DOUBLE')}, arch + 1)"
        hi = f"element_at({num_array([a.discount_depth[1] for a in ARCHETYPES], 'DOUBLE')}, arch + 1)"
        rate = f"{self.ap('discount_rate')} * CASE WHEN {self.is_promo('day')} THEN 1.3D ELSE 1.0D END"
        depth = f"round(({lo} + ({hi} - {lo}) * {r.u('depth', *keys)}) / 0.05D) * 0.05D"
        qty_mean = "(0.25D + CASE WHEN price < 15 THEN 0.9D ELSE 0.0D END)"
        return items.selectExpr(
            "order_id", "ts", "status", "pos + 1 AS line_no", "pidx",
            f"{self.product_id('pidx')} AS product_id",
            f"CAST(least(10, 1 + floor({r.exponential('qty', *keys)} * {qty_mean})) AS INT) AS quantity",
            "price AS unit_price",
            f"round(CASE WHEN {r.u('discounted', *keys)} < {rate} THEN {depth} ELSE 0.0D END, 2) AS discount",
        )

    # ---------------------------------------------------------------- web events
    # A session is a sequence of events (page_view, optional search, product views, add_to_cart,
    # checkout). Each event is one exploded row whose position ``j``, type and product follow in
    # closed form from the session's counts, so no per-session arrays are needed. Event ``j``
    # happens at ``t0 + floor(P_j * speed) + jitter_j`` where ``P_j`` sums the mean dwell of the
    # events before it; its duration is the time to the next event.
    def _events(self, df: DataFrame, start: str, fav: str) -> DataFrame:
        """Rows ``(session_num, customer_id, device, day, j, event_type, pid, ref, pos, last_dur,
        next_checkout)`` -> final event columns. ``pos`` is the nominal offset ``P_j``, ``last_dur``
        the duration of a purchase session's checkout (null otherwise); the checkout has no jitter."""
        r = self.r
        mean = (f"CASE event_type WHEN 'page_view' THEN {_DWELL['page_view']} WHEN 'search' THEN {_DWELL['search']} "
                f"WHEN 'product_view' THEN {_DWELL['product_view']} ELSE {_DWELL['add_to_cart']} END")
        jitter = "CAST(floor({u} * 3) AS BIGINT)"
        df = _add(df, _speed=clamp(r.lognormal_unit_mean(0.5, "speed", "session_num"), "0.5D", "4.0D"),
                  _jit=jitter.format(u=r.u("jitter", "session_num", "j")),
                  _jit_next=f"CASE WHEN next_checkout THEN 0L ELSE {jitter.format(u=r.u('jitter', 'session_num', 'j + 1'))} END")
        df = _add(df, _t0=start)
        df = _add(df, _off="CAST(floor(pos * _speed) AS BIGINT) + CASE WHEN j = 0 OR event_type = 'checkout' THEN 0 ELSE _jit END",
                  _off_next=f"CAST(floor((pos + {mean}) * _speed) AS BIGINT) + _jit_next")
        landing = ["/", "/deals", "/new-arrivals", "/account"]
        df = _add(df, _u_page=r.u("page", "session_num", "j"))
        page_idx = weighted_index([0.40, 0.15, 0.10, 0.10, 0.25], "_u_page")
        cat_page = f"concat('/category/', {pick(self.plan.catalog.categories, fav)})"
        page = (f"CASE event_type WHEN 'page_view' THEN CASE WHEN {page_idx} = 4 THEN {cat_page} "
                f"ELSE {pick(landing, page_idx)} END "
                f"WHEN 'product_view' THEN concat('/product/', {self.product_id('pid')}) "
                f"WHEN 'search' THEN concat('/search?q=', element_at({self.subcat}, ref + 1)) "
                f"WHEN 'add_to_cart' THEN '/cart' ELSE '/checkout' END")
        width = self.plan.width("session") + 2
        return df.selectExpr(
            f"concat('E', lpad(CAST(session_num * 100 + j AS STRING), {width}, '0')) AS event_id",
            "customer_id",
            f"{self.key('S', 'session', 'session_num')} AS session_id",
            "_t0 + _off AS ts", "event_type",
            f"CASE WHEN event_type IN ('product_view', 'add_to_cart') THEN {self.product_id('pid')} END AS product_id",
            f"{page} AS page",
            "CAST(coalesce(last_dur, _off_next - _off) AS BIGINT) AS duration_sec", "device",
        )

    def purchase_events(self, orders: DataFrame) -> DataFrame:
        """Browsing, add_to_cart and checkout shortly before every web/app order."""
        r = self.r
        d = _DWELL
        o = orders.filter("channel <> 'store'").selectExpr(
            "order_num * 4 AS session_num", "customer_id", "day", "ts", "prods", "profile", "fav_cat",
            "CASE WHEN channel = 'app' THEN 'mobile' ELSE device END AS device")
        o = _add(o, hs=f"CAST({r.u('search', 'session_num')} < 0.4D AS INT)",
                 n_alt=r.below(2, "alt_views", "session_num"), n_prods="size(prods)",
                 gap=f"CAST(floor(10 + {r.u('gap', 'session_num')} * 110) AS BIGINT)")
        o = _add(o, _base=f"{d['page_view']} + {d['search']} * hs + {d['product_view']} * n_alt")
        per_line = d["product_view"] + d["add_to_cart"]
        # session-level events: page_view, search, alternative product views, checkout
        head = _add(o, e="explode(sequence(0, 1 + hs + n_alt))")
        head = head.selectExpr(
            "session_num", "customer_id", "device", "day", "fav_cat", "ts", "gap", "_base", "n_prods",
            "CASE WHEN e = 1 + hs + n_alt THEN 1 + hs + n_alt + 2 * n_prods ELSE e END AS j",
            "CASE WHEN e = 0 THEN 'page_view' WHEN e <= hs THEN 'search' WHEN e <= hs + n_alt THEN 'product_view' "
            "ELSE 'checkout' END AS event_type",
            f"CASE WHEN e > hs AND e <= hs + n_alt THEN {self.pick_product('day', 'alt', 'session_num', 'e - 1 - hs')} END AS pid",
            "CASE WHEN e = 1 AND hs = 1 THEN prods[0] END AS ref",
            f"CASE WHEN e = 0 THEN 0.0D WHEN e <= hs THEN {d['page_view']}.0D "
            f"WHEN e <= hs + n_alt THEN {d['page_view']} + {d['search']} * hs + {d['product_view']} * (e - 1 - hs) "
            f"ELSE _base + {per_line} * n_prods END AS pos",
            "CASE WHEN e = 1 + hs + n_alt THEN gap END AS last_dur", "FALSE AS next_checkout",
        )
        # per basket line: a product_view and an add_to_cart of the product bought
        lines = o.selectExpr("*", "posexplode(prods) AS (p, line_pid)").selectExpr(
            "*", "explode(array(0, 1)) AS c")
        lines = lines.selectExpr(
            "session_num", "customer_id", "device", "day", "fav_cat", "ts", "gap", "_base", "n_prods",
            "1 + hs + n_alt + 2 * p + c AS j",
            "CASE WHEN c = 0 THEN 'product_view' ELSE 'add_to_cart' END AS event_type",
            "line_pid AS pid", "CAST(NULL AS INT) AS ref",
            f"_base + {per_line} * p + {d['product_view']} * c AS pos",
            "CAST(NULL AS BIGINT) AS last_dur", "p = n_prods - 1 AND c = 1 AS next_checkout",
        )
        ev = head.unionByName(lines)
        # the checkout happens ``gap`` seconds before the order: t0 = ts - gap - offset(checkout)
        start = f"ts - gap - CAST(floor((_base + {per_line} * n_prods) * _speed) AS BIGINT)"
        return self._events(ev, start, "fav_cat")

    def _view_session(self, df: DataFrame, *, salt: str, n_views: str, search_p: str, cart: str,
                      profile: str = "profile", fav: str = "fav_cat") -> DataFrame:
        """Explode sessions without a purchase: page_view, optional search, views, optional add_to_cart."""
        r, d = self.r, _DWELL
        df = _add(df, hs=f"CAST({r.u(salt + ':search', 'session_num')} < {search_p} AS INT)", nv=n_views)
        df = _add(df, ab=f"CAST(nv > 0 AND {cart} AS INT)")
        df = _add(df, e="explode(sequence(0, hs + nv + ab))")

        def view(idx: str) -> str:
            return self.pick_product("day", salt, "session_num", idx, profile=profile, fav=fav)

        return df.selectExpr(
            "session_num", "customer_id", "device", "day", f"{fav} AS fav", "e AS j",
            "CASE WHEN e = 0 THEN 'page_view' WHEN e <= hs THEN 'search' WHEN e <= hs + nv THEN 'product_view' "
            "ELSE 'add_to_cart' END AS event_type",
            f"CASE WHEN e > hs AND e <= hs + nv THEN {view('e - 1 - hs')} "
            f"WHEN e > hs + nv THEN {view('nv - 1')} END AS pid",
            f"CASE WHEN e = 1 AND hs = 1 THEN {view('0')} END AS ref",
            f"CASE WHEN e = 0 THEN 0.0D WHEN e <= hs THEN {d['page_view']}.0D "
            f"ELSE {d['page_view']} + {d['search']} * hs + {d['product_view']} * (e - 1 - hs) END AS pos",
            "CAST(NULL AS BIGINT) AS last_dur", "FALSE AS next_checkout",
        )

    def browse_events(self, cust: DataFrame) -> DataFrame:
        """Sessions of known customers that end without an order; some abandon a cart."""
        p, r = self.plan, self.r
        occ = self.occurrences(cust, salt="browse", per_year=self.ap("sessions_per_year"), extra=self.decay)
        occ = _add(occ, session_num=f"(CAST(k AS BIGINT) * {p.customers} + cnum) * 4 + 1")
        ev = self._view_session(
            occ, salt="bv", n_views=f"least(8, 1 + {r.geometric('0.8D', 'views', 'session_num')})", search_p="0.3D",
            cart=f"{r.u('abandon', 'session_num')} < {self.ap('abandon_rate')}")
        start = self.epoch("day", self.time_of_day("browse_tod", "session_num"))
        return self._events(ev, start, "fav")

    def anonymous_events(self) -> DataFrame:
        """Visitors who are not logged in: customer_id is null."""
        p, r = self.plan, self.r
        df = self.spark.range(0, 3 * p.customers, 1, p.partitions).selectExpr("id AS anon")
        df = _add(df, day=r.below(p.days, "anon:day", "anon"))
        df = df.filter(f"{r.u('anon:keep', 'anon')} < {self.day_factor('day')}")
        df = _add(df, session_num="anon * 4 + 2", _u_fav=r.u("anon:fav", "anon"), _u_dev=r.u("anon:device", "anon"))
        df = _add(df, anon_fav=weighted_index(p.catalog.category_weights, "_u_fav"), customer_id="CAST(NULL AS STRING)",
                  device=pick(people.DEVICES, weighted_index((0.35, 0.55, 0.10), "_u_dev")))
        ev = self._view_session(
            df, salt="av", n_views=r.below(4, "anon:views", "session_num"), search_p="0.3D",
            cart=f"{r.u('anon:cart', 'session_num')} < 0.15D", profile="0", fav="anon_fav")
        start = self.epoch("day", self.time_of_day("anon_tod", "session_num"))
        return self._events(ev, start, "fav")

    # ---------------------------------------------------------------- social and feedback
    def social(self, cust: DataFrame) -> DataFrame:
        p, r = self.plan, self.r
        occ = self.occurrences(cust.filter("social_active"), salt="social", per_year=self.ap("social_per_year"),
                               extra=self.decay)
        occ = _add(occ, num=f"CAST(k AS BIGINT) * {p.customers} + cnum")
        occ = _add(occ, sentiment=f"round({clamp(self.satisfaction('day') + ' + 0.35D * ' + r.normal('sentiment', 'num'), '-1.0D', '1.0D')}, 2)",
                   _u_type=r.u("itype", "num"), _u_plat=r.u("platform", "num"), _u_plat2=r.u("platform2", "num"))
        itype = (f"CASE WHEN sentiment > 0.2D THEN {weighted_index((0.50, 0.20, 0.20, 0.10), '_u_type')} "
                 f"WHEN sentiment < -0.2D THEN {weighted_index((0.10, 0.40, 0.05, 0.45), '_u_type')} "
                 f"ELSE {weighted_index((0.35, 0.30, 0.15, 0.20), '_u_type')} END")
        platform = (f"CASE WHEN _u_plat < 0.7D THEN platform_pref "
                    f"ELSE {weighted_index(people.PLATFORM_WEIGHTS, '_u_plat2')} END")
        return occ.selectExpr(
            f"{self.key('I', 'interaction', 'num')} AS interaction_id", "customer_id",
            f"{pick(people.PLATFORMS, platform)} AS platform",
            f"{pick(people.INTERACTION_TYPES, itype)} AS interaction_type",
            "sentiment",
            f"{self.epoch('day', self.time_of_day('social_tod', 'num'))} AS ts",
        )

    def feedback(self, cust: DataFrame) -> DataFrame:
        p, r = self.plan, self.r
        churner = f"arch = {CHURNER}"

        def extra(day: str) -> str:  # churners complain more while they sour
            return f"(CASE WHEN {churner} AND {self.churn_ramp(day)} <= 0 THEN 0.5D ELSE 1.0D END)"

        occ = self.occurrences(cust, salt="feedback", per_year=self.ap("feedback_per_year"), extra=extra,
                               extra_mean=f"CASE WHEN {churner} THEN 0.6D ELSE 1.0D END")
        occ = _add(occ, num=f"CAST(k AS BIGINT) * {p.customers} + cnum")
        occ = _add(occ, sat=self.satisfaction("day"), _z=r.normal("rating", "num"), _z2=r.normal("nps", "num"),
                   _u_cat=r.u("fcat", "num"), _u_ch=r.u("fchannel", "num"))
        occ = _add(occ,
                   rating=f"CAST({clamp('round(3.3D + 1.8D * sat + 0.7D * _z)', '1', '5')} AS INT)",
                   nps=f"CAST({clamp('round(6.3D + 4.5D * sat + 1.4D * (0.6D * _z + 0.8D * _z2))', '0', '10')} AS INT)")
        fcat = (f"CASE WHEN rating <= 2 THEN {weighted_index((0.85, 0.0, 0.15), '_u_cat')} "
                f"WHEN rating >= 4 THEN {weighted_index((0.05, 0.70, 0.25), '_u_cat')} "
                f"ELSE {weighted_index((0.35, 0.15, 0.50), '_u_cat')} END")
        occ = _add(occ, fcat=fcat)
        texts = [people.FEEDBACK_TEXTS[c] for c in people.FEEDBACK_CATEGORIES]
        text = "CASE fcat " + " ".join(
            f"WHEN {i} THEN {pick(t, r.below(len(t), 'text', 'num'))}" for i, t in enumerate(texts)) + " END"
        resolved_p = "CASE WHEN fcat = 0 THEN 0.35D + 0.25D * (sat + 1.0D) ELSE 0.9D END"
        return occ.selectExpr(
            f"{self.key('F', 'feedback', 'num')} AS feedback_id", "customer_id",
            f"{self.epoch('day', self.time_of_day('feedback_tod', 'num'))} AS ts",
            f"{pick(people.FEEDBACK_CHANNELS, weighted_index(people.FEEDBACK_CHANNEL_WEIGHTS, '_u_ch'))} AS channel",
            "rating", "nps",
            f"{pick(people.FEEDBACK_CATEGORIES, 'fcat')} AS category",
            f"{text} AS text",
            f"CASE WHEN {r.u('resolved', 'num')} < {resolved_p} THEN 'true' ELSE 'false' END AS resolved",
        )

    # ---------------------------------------------------------------- customer records
    def customer_records(self, cust: DataFrame) -> DataFrame:
        """Customer rows as exported: the signup version and, for some, one later update (v=1)."""
        p, r = self.plan, self.r
        names_f, names_m, last = people.FIRST_NAMES_F, people.FIRST_NAMES_M, people.LAST_NAMES
        cities = [list(x[3]) for x in people.COUNTRIES]
        max_cities = max(len(x) for x in cities)
        flat_cities = [cs[i % len(cs)] for cs in cities for i in range(max_cities)]
        df = cust.selectExpr(
            "cnum", "customer_id", "signup_day", "win_a", "win_b",
            f"{r.u('country', 'cnum')} AS _u_country", f"{r.u('gender', 'cnum')} AS _u_gender",
            f"{r.u('acq', 'cnum')} AS _u_acq",
            f"{self.ap('age_mean')} AS _age_mean",
        )
        df = _add(df, country_idx=weighted_index([x[2] for x in people.COUNTRIES], "_u_country"),
                  gender_idx=weighted_index(people.GENDER_WEIGHTS, "_u_gender"),
                  _first_f=r.below(len(names_f), "first", "cnum"), _first_m=r.below(len(names_m), "first", "cnum"),
                  _last=r.below(len(last), "last", "cnum"))
        df = _add(df, _female=f"gender_idx = 0 OR (gender_idx = 2 AND {r.u('xname', 'cnum')} < 0.5D)",
                  _n_city=f"element_at({num_array([len(x) for x in cities], 'INT')}, country_idx + 1)")
        df = _add(df, _city_idx=r.below("_n_city", "city", "cnum"))
        lowered = [[_email_part(n) for n in names] for names in (names_f, names_m, last)]
        # email local parts come from pre-lowered lists: Spark's lower() loads ICU on first use.
        local = (f"concat_ws('.', CASE WHEN _female THEN {pick(lowered[0], '_first_f')} ELSE {pick(lowered[1], '_first_m')} END, "
                 f"{pick(lowered[2], '_last')})")

        def city(shift: int) -> str:
            return f"element_at({str_array(flat_cities)}, country_idx * {max_cities} + CAST(pmod(_city_idx + {shift}, _n_city) AS INT) + 1)"

        def email(salt: str) -> str:
            domain = pick(people.EMAIL_DOMAINS, r.below(len(people.EMAIL_DOMAINS), salt, "cnum"))
            return f"concat({local}, CAST(pmod(xxhash64({p.seed}L, {q(salt)}, cnum), 90) + 10 AS STRING), '@', {domain})"

        def phone(salt: str) -> str:
            code = pick([x[1] for x in people.COUNTRIES], "country_idx")
            digits = f"lpad(CAST(pmod(xxhash64({p.seed}L, {q(salt)}, cnum), 1000000000) AS STRING), 9, '0')"
            return f"concat('+', {code}, ' ', {digits})"

        age = clamp(f"_age_mean + 12.0D * {r.normal('age', 'cnum')}", "18.0D", "85.0D")
        base = df.selectExpr(
            "cnum", "customer_id", "win_a", "win_b", "_female", "_first_f", "_first_m", "_last", "country_idx",
            "_n_city", "_city_idx",
            f"CASE WHEN _female THEN {pick(names_f, '_first_f')} ELSE {pick(names_m, '_first_m')} END AS first_name",
            f"{pick(last, '_last')} AS last_name",
            f"{email('email')} AS email",
            f"{phone('phone')} AS phone",
            f"date_sub({self.start}, CAST({age} * 365.25D AS INT) + {r.below(365, 'birth', 'cnum')}) AS birth_date",
            f"{pick(people.GENDERS, 'gender_idx')} AS gender",
            f"{city(0)} AS city",
            f"{pick([x[0] for x in people.COUNTRIES], 'country_idx')} AS country",
            f"{self.date_of('signup_day')} AS signup_date",
            f"{pick(people.ACQUISITION_CHANNELS, weighted_index(people.ACQUISITION_WEIGHTS, '_u_acq'))} AS acquisition_channel",
            f"{self.epoch('signup_day', self.time_of_day('signup_tod', 'cnum'))} AS updated_at",
            "0 AS v",
        )
        span = "(win_b - win_a)"
        upd_day = f"win_a + 1 + {r.below(f'greatest({span} - 1, 1)', 'upd_day', 'cnum')}"
        what = r.below(3, "upd_what", "cnum")
        updates = _add(base.filter(f"{r.u('update', 'cnum')} < 0.12D AND {span} > 30"), _what=what).selectExpr(
            "cnum", "customer_id", "first_name", "last_name",
            f"CASE WHEN _what = 1 THEN {email('email2')} ELSE email END AS email",
            f"CASE WHEN _what = 2 THEN {phone('phone2')} ELSE phone END AS phone",
            "birth_date", "gender",
            f"CASE WHEN _what = 0 THEN {city(1)} ELSE city END AS city",
            "country", "signup_date", "acquisition_channel",
            f"{self.epoch(upd_day, self.time_of_day('upd_tod', 'cnum'))} AS updated_at",
            "1 AS v",
        )
        cols = ["cnum", "customer_id", "first_name", "last_name", "email", "phone", "birth_date", "gender", "city",
                "country", "signup_date", "acquisition_channel", "updated_at", "v"]
        return base.select(*cols).unionByName(updates.select(*cols))
