"""crm-spark: raw customer data -> Delta lakehouse tables, features, models and a report."""

from __future__ import annotations

__version__ = "0.1.0"
