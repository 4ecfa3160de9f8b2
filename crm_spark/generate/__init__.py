"""``crm-spark generate``: a realistic, seeded, scalable synthetic CRM dataset with planted truth.

Usage::

    from crm_spark.generate import generate_dataset
    summary = generate_dataset(spark, out="data/raw", customers=2000, seed=7,
                               start=date(2024, 1, 1), end=date(2025, 12, 31), dirty_rate=0.01)

Everything is built by Spark from ``spark.range`` with native functions and hash-based draws
(``xxhash64(seed, salt, keys)``), so the same arguments give byte-identical files whatever the
machine's core count; only the product catalogue and the planted associations are built on
the driver.

Output layout (``{out}/``; file names are deterministic, lines sorted by time then key)
---------------------------------------------------------------------------------------
========================  ======================================================================
``customers/``            ``customers-snapshot-<start>.csv`` (customers who signed up before
                          start), then ``customers-YYYY-MM.csv`` (signups of that month and
                          later versions of earlier customers: newer ``updated_at`` with a
                          moved city, new email or phone). Latest ``updated_at`` wins.
``products/``             ``products-<start>.csv`` (initial catalogue) and
                          ``products-<launch date>.csv`` (products launched mid-range; they sell
                          only from that date).
``orders/``               ``orders-YYYY-MM.csv`` by month of ``order_ts``.
``order_items/``          ``order_items-YYYY-MM.csv`` by month of the order's ``order_ts``.
``web_events/``           ``web_events-YYYY-MM-DD.json`` (JSON lines) by day of ``event_ts``.
``social_interactions/``  ``social_interactions-YYYY-MM.json`` (JSON lines) by month of ``ts``.
``feedback/``             ``feedback-YYYY-MM.csv`` by month of ``ts``.
``_truth/``               the answer key (below).
========================  ======================================================================

At very large scales a period's file is split into ``<name>-<period>-partNN.<ext>`` (by key hash,
about 4 million rows a part). Every CSV file starts with a header row and is RFC-4180 quoted;
feedback ``text`` legitimately holds commas, double quotes and line breaks (read it with
``multiLine``). Columns are exactly those of SPEC section 3. Values:

- timestamps ``yyyy-MM-dd HH:mm:ss`` in UTC; dates ``yyyy-MM-dd``;
- keys ``C0000001`` (customer), ``P00001`` (product), ``O000001234`` (order), ``E...`` (event),
  ``S...`` (web session), ``I...`` (social interaction), ``F...`` (feedback); widths grow with
  the scale; ids are unique but not dense;
- ``order_items.unit_price`` is the product's list price, ``discount`` the fraction (0.00-0.50)
  taken off ``quantity * unit_price``; returns are ``orders.status = returned`` (quantities stay
  positive); ``feedback.resolved`` is ``true``/``false``; ``sentiment`` is in [-1, 1];
  ``web_events.customer_id`` is null for anonymous visitors; ``product_id`` is set for
  product_view and add_to_cart events only.

Planted truth (``{out}/_truth/``)
---------------------------------
- ``archetypes.csv``: ``customer_id,archetype``, one row per customer; archetypes are
  ``loyal_high_spender``, ``bargain_hunter``, ``occasional``, ``new_customer`` (signed up in the
  last ~90 days), ``churner``.
- ``churners.csv``: ``customer_id,churn_date,decay_start_date``: a churner's orders, sessions,
  social activity and satisfaction decline from ``decay_start_date`` (8-12 weeks before) and stop
  at ``churn_date`` (no activity on or after it). Churn dates spread over the whole range.
- ``associations.json``: JSON lines ``{"kind": "pair"|"triple", "items": [...], "antecedent":
  "P...", "consequents": [...], "probability": p}``: when the antecedent is in a basket all
  consequents are added with probability ``p`` (0.5-0.7).
- ``dirt.csv``: ``source,kind,key,file,column,mode,detail``, one row per injected defect.
  ``key`` is the row's key (``order_id|line_no`` for order_items), ``file`` the file name (in
  the source folder) of the defective line, ``column`` the affected column (when one is),
  ``mode`` is ``in_place`` (the row's only copy carries the defect) or ``extra`` (an additional
  line; the intact row is also present), ``detail`` the injected value, timestamp variant,
  original file (late rows) or change (newer versions).
- ``dirt_summary.csv``: ``source,kind,count`` for every kind a source can carry (zeros included).
- ``manifest.json``: the arguments, and per source its format, columns, files, rows, defects.

Dirt kinds (``kind`` in dirt.csv), each row dirty with probability ``dirty_rate``
--------------------------------------------------------------------------------
extra: ``duplicate_row`` (exact copy, same file), ``newer_version`` (customers: later
``updated_at`` with a changed phone or email; orders: status changed, re-exported in the next
month's file; feedback: ``resolved`` flipped, next month's file), ``malformed_field_count`` (a
field missing or an extra one), ``malformed_unclosed_quote`` (a field opens a quote that never
closes; not in feedback), ``malformed_json`` (a truncated JSON line).
in_place: ``na_value`` ("N/A"), ``decimal_comma`` ("12,50"), ``empty_numeric`` (empty numeric
field), ``out_of_range`` (rating 0/6/7/10, nps 11/15/-1/100, sentiment beyond +-1, negative
duration_sec), ``negative_quantity`` (on a completed order, not a return), ``zero_price``,
``missing_customer_id`` (orders), ``unknown_foreign_key`` (orders.customer_id not in customers,
order_items/web_events.product_id not in products), ``timestamp_format`` (the same instant as
``2024-03-05T10:11:12Z``, ``05/03/2024 10:11``, epoch seconds or ``2024-03-05 12:11:12+02:00``),
``late_arriving`` (the row sits in a file 1-2 months / 1-3 days after the one its timestamp
belongs to).
"""

from __future__ import annotations

from crm_spark.generate.dataset import GenerateSummary, generate_dataset

__all__ = ["GenerateSummary", "generate_dataset"]
