"""The run report: sections of facts, tables and figures, rendered to one self-contained HTML file.

The ``report`` stage (:mod:`crm_spark.stages.report`) fills a :class:`Report` from the lake's
tables and the model stages' MLflow runs; :func:`render` turns it into HTML with the Jinja2
template beside this module, every figure embedded as a PNG data URI (the file opens without a
network or the lake next to it). Nothing here touches Spark.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["Figure", "Report", "Section", "Table", "png", "render", "number"]


@dataclass(frozen=True)
class Figure:
    title: str
    png: bytes
    caption: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()  # per column: right-aligned
    caption: str = ""


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, href)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the section has no content (the stage was skipped or never ran)

    @property
    def empty(self) -> bool:
        return not (self.facts or self.tables or self.figures)


@dataclass
class Report:
    title: str
    as_of: str
    generated: str
    lake: str
    sections: list[Section]
    stages: Table | None = None


def png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (the same settings the stages use for their logged figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def number(value: Any, digits: int = 3) -> str:
    """A number for people: thousands separators, a few significant decimals, '-' for missing."""
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return "-"
    if v.is_integer():
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.{digits}f}"


def percent(value: float) -> str:
    return f"{value:.1%}"


_ENV = Environment(
    loader=PackageLoader("crm_spark", "report/templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(report: Report) -> str:
    """The report as one HTML document."""
    return _ENV.get_template("report.html.j2").render(report=report)
