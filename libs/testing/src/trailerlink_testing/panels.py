"""Grafana's panels, evaluated against a real Prometheus and drawn to PNG, for tests.

Grafana itself cannot run here (its licence keeps it out of the registries we install
from), so a test reads the dashboard JSON that ``monitoring/dashboards.py`` generates,
asks Prometheus each panel's queries the way Grafana would, and draws what a person would
see: stat panels coloured by their thresholds, tables with their named columns, units and
value mappings, time series over the last minutes. Not a Grafana — enough to look at, and
the same reading of thresholds, mappings and column names that Grafana applies.

    data = evaluate(prom, panel, {"trailer": "trailer-01"})
    render(board, [data, ...], Path("fleet-healthy.png"), subtitle="healthy")
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Grafana's named colours (its default theme), enough for thresholds and mappings.
COLOURS = {
    "green": "#73BF69",
    "semi-dark-green": "#56A64B",
    "dark-green": "#37872D",
    "yellow": "#FADE2A",
    "orange": "#FF9830",
    "semi-dark-orange": "#FF780A",
    "red": "#F2495C",
    "semi-dark-red": "#E02F44",
    "dark-red": "#C4162A",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": "#CCCCDC",
    "transparent": "#181B1F",
}
_PANEL_BG = "#181B1F"
# Every PNG :func:`render` wrote in this process, for a test session's summary.
DRAWN: list[Path] = []
_TEXT = "#CCCCDC"


def colour(name: str | None) -> str:
    if not name:
        return _TEXT
    return COLOURS.get(name, name if name.startswith("#") else _TEXT)


# --- queries ------------------------------------------------------------------------
def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Template variables as Grafana fills them (``$name`` and ``${name}``)."""
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def instant(base_url: str, expr: str) -> list[dict[str, Any]]:
    rsp = httpx.get(f"{base_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = rsp.json()
    if body.get("status") != "success":
        raise ValueError(f"query failed: {expr}: {body.get('error')}")
    return body["data"]["result"]


def ranged(base_url: str, expr: str, seconds: float, step: float) -> list[dict[str, Any]]:
    end = time.time()
    rsp = httpx.get(
        f"{base_url}/api/v1/query_range",
        params={"query": expr, "start": end - seconds, "end": end, "step": step},
        timeout=20,
    )
    body = rsp.json()
    if body.get("status") != "success":
        raise ValueError(f"query failed: {expr}: {body.get('error')}")
    return body["data"]["result"]


@dataclass
class Series:
    """One answer of one target: its labels, its legend, its points (t, value)."""

    ref_id: str
    labels: dict[str, str]
    legend: str
    points: list[tuple[float, float]]

    @property
    def last(self) -> float:
        return self.points[-1][1] if self.points else math.nan


@dataclass
class PanelData:
    panel: dict[str, Any]
    series: list[Series] = field(default_factory=list)

    @property
    def title(self) -> str:
        return str(self.panel.get("title", ""))

    def empty_targets(self) -> list[str]:
        """refIds of the panel's targets that answered nothing."""
        answered = {s.ref_id for s in self.series}
        return [t["refId"] for t in self.panel.get("targets", []) if t["refId"] not in answered]


def _legend(fmt: str, labels: Mapping[str, str]) -> str:
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return labels.get("__name__", "") + ("{" + inner + "}" if inner else "")
    return re.sub(
        r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt
    )


def evaluate(
    base_url: str,
    panel: Mapping[str, Any],
    variables: Mapping[str, str] = (),
    range_seconds: float = 600,
    step: float = 5,
) -> PanelData:
    """Every target of ``panel`` asked of the Prometheus at ``base_url``: instant queries
    for stat and table panels (and targets marked ``instant``), range queries otherwise."""
    variables = dict(variables)
    data = PanelData(dict(panel))
    as_range = panel.get("type") == "timeseries"
    for target in panel.get("targets", []):
        expr = substitute(target["expr"], variables)
        if as_range and not target.get("instant"):
            for r in ranged(base_url, expr, range_seconds, step):
                data.series.append(
                    Series(
                        target["refId"],
                        r["metric"],
                        _legend(target.get("legendFormat", ""), r["metric"]),
                        [(float(t), float(v)) for t, v in r["values"]],
                    )
                )
        else:
            for r in instant(base_url, expr):
                t, v = r["value"]
                data.series.append(
                    Series(
                        target["refId"],
                        r["metric"],
                        _legend(target.get("legendFormat", ""), r["metric"]),
                        [(float(t), float(v))],
                    )
                )
    return data


# --- Grafana's field config: units, mappings, thresholds ------------------------------
def format_value(value: float, unit: str | None, decimals: int | None = None) -> str:
    """The value as Grafana shows it in ``unit`` (the units our dashboards use)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "No data"
    unit = unit or "short"
    if unit in ("s", "dtdurations"):
        return _duration(value)
    if unit in ("bytes", "decbytes"):
        return _scaled(value, 1024 if unit == "bytes" else 1000, "B", decimals)
    if unit in ("Bps", "binBps"):
        return _scaled(value, 1000 if unit == "Bps" else 1024, "B", decimals) + "/s"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "percent":
        return f"{value:.{1 if decimals is None else decimals}f}%"
    if unit == "dateTimeFromNow":
        return (
            _duration(time.time() - value) + " ago"
            if value < time.time()
            else "in " + _duration(value - time.time())
        )
    if unit == "reqpm" or unit == "opm":
        return f"{value:.{1 if decimals is None else decimals}f} /min"
    if unit == "ops":
        return f"{value:.{2 if decimals is None else decimals}f} /s"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{2 if decimals is None else decimals}f}"


def _duration(seconds: float) -> str:
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    for size, name in ((86400, "day"), (3600, "hour"), (60, "min")):
        if s >= size:
            n = s / size
            return f"{sign}{n:.1f} {name}{'s' if n >= 2 and name != 'min' else ''}"
    return f"{sign}{s:.0f} s" if s >= 10 or s.is_integer() else f"{sign}{s:.1f} s"


def _scaled(value: float, base: int, suffix: str, decimals: int | None) -> str:
    prefixes = ["", "Ki", "Mi", "Gi", "Ti"] if base == 1024 else ["", "k", "M", "G", "T"]
    i = 0
    while abs(value) >= base and i < len(prefixes) - 1:
        value /= base
        i += 1
    d = (0 if i == 0 else 1) if decimals is None else decimals
    return f"{value:.{d}f} {prefixes[i]}{suffix}"


def apply_mappings(
    value: float, mappings: Sequence[Mapping[str, Any]]
) -> tuple[str | None, str | None]:
    """(text, colour) of the first value mapping that matches, else (None, None)."""
    for mapping in mappings or ():
        options = mapping.get("options", {})
        kind = mapping.get("type")
        if kind == "value":
            key = format_value(value, "short") if not math.isnan(value) else "NaN"
            hit = options.get(key)
            if hit:
                return hit.get("text"), hit.get("color")
        elif kind == "range":
            lo, hi = options.get("from"), options.get("to")
            if (lo is None or value >= lo) and (hi is None or value <= hi):
                res = options.get("result", {})
                return res.get("text"), res.get("color")
        elif (
            kind == "special"
            and math.isnan(value)
            and options.get("match") in ("null", "nan", "null+nan")
        ):
            res = options.get("result", {})
            return res.get("text"), res.get("color")
    return None, None


def threshold_colour(value: float, thresholds: Mapping[str, Any] | None) -> str | None:
    """The colour of the highest step at or below ``value`` (absolute thresholds)."""
    if not thresholds or math.isnan(value):
        return None
    chosen = None
    for step in thresholds.get("steps", []):
        if step.get("value") is None or value >= step["value"]:
            chosen = step.get("color")
    return chosen


def field_config(panel: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The panel's defaults with the overrides that match field ``name`` applied."""
    config = dict(panel.get("fieldConfig", {}).get("defaults", {}))
    if name is None:
        return config
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        if matcher.get("id") == "byName" and matcher.get("options") == name:
            for prop in override.get("properties", []):
                key = prop["id"]
                if key.startswith("custom."):
                    config.setdefault("custom", {})
                    config["custom"] = {**config["custom"], key[7:]: prop.get("value")}
                else:
                    config[key] = prop.get("value")
    return config


def display(value: float, config: Mapping[str, Any]) -> tuple[str, str | None]:
    """(text, colour) Grafana shows for ``value`` under a field config."""
    text, mapped = apply_mappings(value, config.get("mappings", []))
    shown = (
        text
        if text is not None
        else format_value(value, config.get("unit"), config.get("decimals"))
    )
    return shown, mapped or threshold_colour(value, config.get("thresholds"))


# --- tables: Grafana's merge + organize transformations ------------------------------
def table_rows(data: PanelData) -> tuple[list[str], list[list[tuple[str, str | None]]]]:
    """Columns and cells (text, colour) of a table panel whose targets are instant
    ``format: table`` queries: one query gives a row per series (value column "Value");
    several are joined the way Grafana's ``merge`` does, on their common labels (value
    columns "Value #<refId>"). Columns are named and ordered by the panel's ``organize``
    transformation, and each cell shown with its column's unit, mappings and thresholds."""
    panel = data.panel
    organize: dict[str, Any] = {}
    for t in panel.get("transformations", []):
        if t.get("id") == "organize":
            organize = t.get("options", {})
    excluded = {k for k, v in organize.get("excludeByName", {}).items() if v}
    renames = organize.get("renameByName", {})
    refs = [t["refId"] for t in panel.get("targets", [])]
    single = len(refs) == 1
    label_names: list[str] = []
    rows: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for i, s in enumerate(data.series):
        labels = {k: v for k, v in s.labels.items() if k != "__name__"}
        label_names += [k for k in labels if k not in label_names]
        key = (("#", str(i)),) if single else tuple(sorted(labels.items()))
        row = rows.setdefault(key, dict(labels))
        row["Value" if single else f"Value #{s.ref_id}"] = s.last
    value_names = ["Value"] if single else [f"Value #{r}" for r in refs]
    columns = [c for c in [*label_names, *value_names] if c not in excluded and c != "Time"]
    order = organize.get("indexByName", {})
    if order:
        columns.sort(key=lambda c: order.get(c, 1000))
    cells = []
    for _, row in sorted(rows.items()):
        out = []
        for c in columns:
            if c in label_names:
                out.append((str(row.get(c, "")), None))
            else:
                out.append(display(row.get(c, math.nan), field_config(panel, renames.get(c, c))))
        cells.append(out)
    return [renames.get(c, c) for c in columns], cells


# --- drawing ------------------------------------------------------------------------
def render(
    board: Mapping[str, Any], panels: Sequence[PanelData], path: Path, subtitle: str = ""
) -> Path:
    """Draw ``panels`` of ``board`` at their grid positions into ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top = min(p.panel["gridPos"]["y"] for p in panels)
    rows = max(p.panel["gridPos"]["y"] + p.panel["gridPos"]["h"] for p in panels) - top
    col_in, row_in, header_in = 0.75, 0.42, 0.6  # inches: a grid column, a grid row, title
    width_in, height_in = 24 * col_in, rows * row_in + header_in
    fig = Figure(figsize=(width_in, height_in), facecolor="#111217")
    FigureCanvasAgg(fig)
    title = str(board.get("title", ""))
    fig.text(
        0.005,
        1 - 0.35 / height_in,
        f"{title} — {subtitle}" if subtitle else title,
        color=_TEXT,
        fontsize=15,
        fontweight="bold",
        va="center",
    )
    for data in panels:
        g = data.panel["gridPos"]
        kind = data.panel.get("type")
        # The panel's cell, then room inside it for its title (and a graph's axes labels).
        left_in = g["x"] * col_in + 0.05
        top_in = header_in + (g["y"] - top) * row_in + 0.05
        w_in, h_in = g["w"] * col_in - 0.1, g["h"] * row_in - 0.1
        pad_top, pad_bottom, pad_left = 0.28, 0.0, 0.0
        if kind == "timeseries":
            pad_bottom, pad_left = 0.42, 0.55
        frame = fig.add_axes(
            (left_in / width_in, 1 - (top_in + h_in) / height_in, w_in / width_in, h_in / height_in)
        )
        frame.set_facecolor(_PANEL_BG)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color("#2C3235")
        frame.text(
            0.01,
            1 - 0.14 / h_in,
            data.title,
            color=_TEXT,
            fontsize=10,
            fontweight="bold",
            va="center",
            transform=frame.transAxes,
        )
        ax = fig.add_axes(
            (
                (left_in + pad_left) / width_in,
                1 - (top_in + h_in - pad_bottom) / height_in,
                (w_in - pad_left - 0.1) / width_in,
                (h_in - pad_top - pad_bottom) / height_in,
            )
        )
        ax.set_facecolor(_PANEL_BG)
        for spine in ax.spines.values():
            spine.set_visible(kind == "timeseries")
            spine.set_color("#2C3235")
        if kind == "stat":
            _draw_stat(ax, data)
        elif kind == "table":
            _draw_table(ax, data)
        else:
            _draw_timeseries(ax, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
    DRAWN.append(path)
    return path


def _draw_stat(ax: Any, data: PanelData) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    config = field_config(data.panel)
    values = data.series or [Series("A", {}, "", [])]
    n = len(values)
    colour_mode = data.panel.get("options", {}).get("colorMode", "value")
    for i, s in enumerate(values):
        text, col = display(s.last, config)
        x0, x1 = i / n, (i + 1) / n
        if colour_mode == "background" and col:
            ax.axvspan(x0, x1, color=colour(col))
            fg = "#111217"
        else:
            fg = colour(col) if col else _TEXT
        ax.text(
            (x0 + x1) / 2,
            0.5,
            text,
            ha="center",
            va="center",
            color=fg,
            fontsize=22 if n == 1 else 14,
            fontweight="bold",
            transform=ax.transAxes,
        )
        if n > 1 and s.legend:
            ax.text(
                (x0 + x1) / 2,
                0.15,
                s.legend,
                ha="center",
                va="center",
                color=fg,
                fontsize=8 if n <= 4 else 6,
                rotation=0 if n <= 4 else 35,
                transform=ax.transAxes,
            )
    ax.set_xlim(0, 1)


def _draw_table(ax: Any, data: PanelData) -> None:
    ax.axis("off")
    columns, cells = table_rows(data)
    if not cells:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=_TEXT)
        return
    table = ax.table(
        cellText=[[text for text, _ in row] for row in cells],
        colLabels=columns,
        loc="upper center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.4)
    for (r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#2C3235")
        if r == 0:
            cell.set_facecolor("#22252B")
            cell.get_text().set_color(_TEXT)
            cell.get_text().set_fontweight("bold")
            continue
        _, col = cells[r - 1][c]
        cell.set_facecolor(colour(col) if col else _PANEL_BG)
        cell.get_text().set_color("#111217" if col else _TEXT)


def _draw_timeseries(ax: Any, data: PanelData) -> None:
    ax.tick_params(colors=_TEXT, labelsize=7)
    if not data.series:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=_TEXT, transform=ax.transAxes)
        return
    now = max(t for s in data.series for t, _ in s.points)
    earliest = min(t for s in data.series for t, _ in s.points)
    unit = field_config(data.panel).get("unit")
    for s in data.series[:12]:
        xs = [(t - now) / 60 for t, _ in s.points]
        ax.plot(xs, [v for _, v in s.points], label=s.legend[:40], linewidth=1.5)
    ax.set_xlim(min(-1.0, (earliest - now) / 60), 0)
    ax.set_xlabel("minutes before now", color=_TEXT, fontsize=7, labelpad=1)
    if unit and unit not in ("short", "none"):
        ax.set_ylabel(unit, color=_TEXT, fontsize=7)
    ax.grid(color="#2C3235")
    ax.legend(fontsize=6, facecolor=_PANEL_BG, labelcolor=_TEXT, loc="upper left")
