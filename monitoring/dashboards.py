"""The Grafana dashboards, as code: ``make dashboards`` writes ``monitoring/dashboards/*.json``
from this file (then ``make charts-sync`` copies them into the central chart). Never edit
the JSON: ``tests/charts`` regenerates it and fails on any difference.

Built with Grafana's own typed builders (``grafana-foundation-sdk``): a panel, a query, a
threshold or a value mapping that Grafana's schema does not know does not build. The
layout rules support asked for live here too:

- the fleet board's top row answers "is anything wrong?": trailers silent, trailers not
  delivering, canaries failing, images past the deadline — green at 0, amber for one
  trailer (one woman's images), red beyond;
- one row per trailer with named columns, units and value mappings: the link's state,
  the operator's pause and caps, where a raw float would need a legend;
- every per-trailer query takes ``max by (trailer_id)`` so two fleet-monitor replicas
  (or a restart's overlap) never double a count.

    .venv/bin/python monitoring/dashboards.py            # rewrite monitoring/dashboards/
    .venv/bin/python monitoring/dashboards.py --out DIR  # write elsewhere (the test does)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as gp
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import table as gtable
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mc
from grafana_foundation_sdk.models import dashboard as md
from grafana_foundation_sdk.models import prometheus as mp

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = md.DataSourceRef(type_val="prometheus", uid="${datasource}")
GREEN, AMBER, RED, BLUE, GREY = "green", "orange", "red", "blue", "text"


# --- the pieces a panel is made of ---------------------------------------------------
@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Steps:
    """Absolute thresholds: ``base`` colour below the first step, then (value, colour)."""

    base: str = GREEN
    steps: tuple[tuple[float, str], ...] = ()

    def build(self) -> gd.ThresholdsConfig:
        return (
            gd.ThresholdsConfig()
            .mode(md.ThresholdsMode.ABSOLUTE)
            .steps(
                [md.Threshold(value=None, color=self.base)]
                + [md.Threshold(value=v, color=c) for v, c in self.steps]
            )
        )


def traffic_light(amber: float, red: float) -> Steps:
    """Green below ``amber``, amber from it, red from ``red``."""
    return Steps(GREEN, ((amber, AMBER), (red, RED)))


def values(*pairs: tuple[float, str, str]) -> list[md.ValueMap]:
    """A value mapping: (value, text, colour) each."""
    return [
        md.ValueMap(
            options={
                _key(v): md.ValueMappingResult(text=text, color=colour, index=i)
                for i, (v, text, colour) in enumerate(pairs)
            }
        )
    ]


def _key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


LINK_STATES = values(
    (0, "unknown", GREY), (1, "up", GREEN), (2, "degraded", AMBER), (3, "down", RED)
)
PAUSED = values((0, "sending", GREEN), (1, "paused", AMBER))
CANARY = values((1, "passing", GREEN), (0, "failing", RED))


@dataclass(frozen=True)
class Column:
    """One column of a per-trailer table: a query, its header, unit, colours."""

    name: str
    expr: str
    unit: str = "short"
    thresholds: Steps | None = None
    mappings: Sequence[md.ValueMap] = ()
    width: int | None = None


@dataclass
class Panel:
    """Kind, title, queries and field config of one panel; placed by :class:`Board`."""

    kind: str  # stat | timeseries | table
    title: str
    queries: Sequence[Query] = ()
    description: str = ""
    unit: str = "short"
    thresholds: Steps | None = None
    mappings: Sequence[md.ValueMap] = ()
    columns: Sequence[Column] = ()
    instant: bool = False
    hidden: Sequence[str] = ()  # label columns a table does not show
    width: int = 6
    height: int = 8


def stat(
    title: str,
    expr: str,
    *,
    description: str,
    unit: str = "short",
    thresholds: Steps | None = None,
    mappings: Sequence[md.ValueMap] = (),
    width: int = 6,
    height: int = 4,
    legend: str = "",
) -> Panel:
    return Panel(
        "stat",
        title,
        [Query(expr, legend)],
        description,
        unit,
        thresholds or Steps(BLUE),
        mappings,
        width=width,
        height=height,
    )


def series(
    title: str,
    *queries: Query,
    description: str,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
) -> Panel:
    return Panel("timeseries", title, queries, description, unit, width=width, height=height)


def table(
    title: str,
    columns: Sequence[Column],
    *,
    description: str,
    key: str = "trailer_id",
    key_name: str = "Trailer",
    width: int = 24,
    height: int = 10,
) -> Panel:
    return Panel(
        "table",
        title,
        description=description,
        columns=[Column(key_name, key), *columns],
        width=width,
        height=height,
    )


def info_table(
    title: str,
    expr: str,
    *,
    description: str,
    width: int = 12,
    height: int = 8,
    legend: str = "",
    hide: Sequence[str] = (),
) -> Panel:
    """A table of one instant query's labels (the value, a 1 or a count, hidden)."""
    return Panel(
        "table",
        title,
        [Query(expr, legend)],
        description,
        instant=True,
        columns=(),
        width=width,
        height=height,
        hidden=tuple(hide),
    )


# --- building -------------------------------------------------------------------------
def _refs() -> list[str]:
    return [chr(ord("A") + i) for i in range(26)]


def _target(query: Query, ref: str, *, instant: bool = False) -> gp.Dataquery:
    q = gp.Dataquery().ref_id(ref).expr(query.expr).datasource(DATASOURCE)
    if query.legend:
        q = q.legend_format(query.legend)
    if instant:
        q = q.instant().format(mp.PromQueryFormat.TABLE)
    else:
        q = q.range()
    return q


def _stat(p: Panel) -> gstat.Panel:
    b = (
        gstat.Panel()
        .title(p.title)
        .description(p.description)
        .datasource(DATASOURCE)
        .unit(p.unit)
        .thresholds((p.thresholds or Steps(BLUE)).build())
        .color_mode(mc.BigValueColorMode.BACKGROUND)
        .graph_mode(mc.BigValueGraphMode.NONE)
        .text_mode(mc.BigValueTextMode.AUTO)
        .reduce_options(gc.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if p.mappings:
        b = b.mappings(list(p.mappings))
    for query, ref in zip(p.queries, _refs(), strict=False):
        b = b.with_target(_target(query, ref))
    return b


def _series(p: Panel) -> gts.Panel:
    b = (
        gts.Panel()
        .title(p.title)
        .description(p.description)
        .datasource(DATASOURCE)
        .unit(p.unit)
        .fill_opacity(10)
        .line_width(2)
        .show_points(mc.VisibilityMode.NEVER)
        .legend(
            gc.VizLegendOptions()
            .display_mode(mc.LegendDisplayMode.LIST)
            .placement(mc.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for query, ref in zip(p.queries, _refs(), strict=False):
        b = b.with_target(_target(query, ref))
    return b


def _table(p: Panel) -> gtable.Panel:
    b = (
        gtable.Panel()
        .title(p.title)
        .description(p.description)
        .datasource(DATASOURCE)
        .unit(p.unit)
        .show_header(True)
        .cell_options(mc.TableAutoCellOptions())
    )
    if not p.columns:
        for query, ref in zip(p.queries, _refs(), strict=False):
            b = b.with_target(_target(query, ref, instant=True))
        hidden = {"Time": True, "Value": True, "__name__": True} | {h: True for h in p.hidden}
        return b.with_transformation(
            md.DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})
        )
    key, *columns = p.columns
    renames = {key.expr: key.name}
    order = {key.expr: 0}
    for i, (column, ref) in enumerate(zip(columns, _refs(), strict=False)):
        b = b.with_target(_target(Query(column.expr), ref, instant=True))
        renames[f"Value #{ref}"] = column.name
        order[f"Value #{ref}"] = i + 1
        props = [md.DynamicConfigValue(id_val="unit", value=column.unit)]
        if column.thresholds is not None:
            props += [
                md.DynamicConfigValue(id_val="thresholds", value=column.thresholds.build().build()),
                md.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}
                ),
            ]
        if column.mappings:
            props.append(md.DynamicConfigValue(id_val="mappings", value=list(column.mappings)))
            if column.thresholds is None:
                props.append(
                    md.DynamicConfigValue(
                        id_val="custom.cellOptions",
                        value={"type": "color-background", "mode": "basic"},
                    )
                )
        if column.width:
            props.append(md.DynamicConfigValue(id_val="custom.width", value=column.width))
        b = b.override_by_name(column.name, props)
    # One frame per query, joined on the trailer; only the named columns shown, in order.
    b = b.with_transformation(md.DataTransformerConfig(id_val="merge", options={}))
    return b.with_transformation(
        md.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True, "job": True, "instance": True, "__name__": True},
                "renameByName": renames,
                "indexByName": order,
            },
        )
    )


@dataclass
class Board:
    """A dashboard: panels laid out left to right, a new row when 24 columns are full."""

    uid: str
    title: str
    description: str
    rows: list[list[Panel]] = field(default_factory=list)
    variables: Sequence[gd.QueryVariable] = ()

    def row(self, *panels: Panel) -> Board:
        assert sum(p.width for p in panels) <= 24, [p.title for p in panels]
        self.rows.append(list(panels))
        return self

    def build(self) -> dict[str, Any]:
        b = (
            gd.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(["trailerlink"])
            .refresh("1m")
            .time("now-24h", "now")
            .timezone("browser")
            .editable()
            .with_variable(
                gd.DatasourceVariable("datasource").label("Data source").type("prometheus")
            )
        )
        for variable in self.variables:
            b = b.with_variable(variable)
        y, panel_id = 0, 1
        for row in self.rows:
            x = 0
            for p in row:
                builder = {"stat": _stat, "timeseries": _series, "table": _table}[p.kind](p)
                builder = builder.id(panel_id).grid_pos(md.GridPos(h=p.height, w=p.width, x=x, y=y))
                b = b.with_panel(builder)
                x += p.width
                panel_id += 1
            y += max(p.height for p in row)
        return json.loads(json.dumps(b.build(), cls=JSONEncoder))


def _query_variable(
    name: str, label: str, query: str, *, include_all: bool = False
) -> gd.QueryVariable:
    v = (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(md.VariableSort.ALPHABETICAL_ASC)
    )
    if include_all:
        v = v.include_all(True).all_value(".+").multi(True)
    return v


# --- the boards -----------------------------------------------------------------------
def per_trailer(metric: str) -> str:
    return f"max by (trailer_id) ({metric})"


EXPECTED = per_trailer("trailerlink_monitor_trailer_expected")
LAST_HEARTBEAT = per_trailer("trailerlink_monitor_trailer_last_heartbeat_timestamp_seconds")
SILENT_AFTER = 900  # s: as the TrailerlinkTrailerSilent alert
STUCK_AFTER = 7200  # s: as TrailerlinkBacklogStuckWithLinkUp
TOO_OLD = 43200  # s: as TrailerlinkBacklogTooOld


# Refusals are labelled by trailer, so no series exists before the first one: count a
# series born within the hour whole, and read 0 ("none") rather than "No data" until then.
REFUSALS = (
    "sum by (trailer, reason) (increase(trailerlink_ingest_upload_refusals_total[1h]))"
    " or sum by (trailer, reason) (trailerlink_ingest_upload_refusals_total unless "
    "trailerlink_ingest_upload_refusals_total offset 1h)"
    ' or on () label_replace(vector(0), "reason", "none", "", "")'
)


def fleet() -> Board:
    silent = (
        f"count((time() - {LAST_HEARTBEAT} > {SILENT_AFTER}) "
        f"and on (trailer_id) {EXPECTED} == 1) or vector(0)"
    )
    not_delivering = (
        f"count(({per_trailer('trailerlink_monitor_trailer_backlog_objects')} > 0) "
        f"and on (trailer_id) ("
        f"{per_trailer('trailerlink_monitor_trailer_link_state')} != 1 "
        f"or {per_trailer('trailerlink_monitor_trailer_uplink_paused')} == 1 "
        f"or {per_trailer('trailerlink_monitor_trailer_oldest_unsent_age_seconds')} "
        f"> {STUCK_AFTER})) or vector(0)"
    )
    canaries = f"count({per_trailer('trailerlink_monitor_trailer_canary_ok')} == 0) or vector(0)"
    past_deadline = (
        f"sum({per_trailer('trailerlink_monitor_completeness_missing_images')}) or vector(0)"
    )
    held = (
        f"count({per_trailer('trailerlink_monitor_trailer_uplink_paused')} == 1 or "
        f"{per_trailer('trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second')}"
        " > 0) or vector(0)"
    )
    p90 = (
        "histogram_quantile(0.9, sum by (le) "
        "(rate(trailerlink_monitor_acquisition_to_pacs_seconds_bucket[1h])))"
    )
    return (
        Board(
            "trailerlink-fleet",
            "trailerlink — fleet overview",
            "Is anything wrong? The top row says, the table says where.",
        )
        .row(
            stat(
                "Trailers silent",
                silent,
                unit="short",
                thresholds=traffic_light(1, 2),
                description="Expected trailers with no heartbeat for over 15 minutes "
                "(link, power or monitor agent). Amber: one trailer; red: more.",
                height=5,
            ),
            stat(
                "Trailers not delivering",
                not_delivering,
                thresholds=traffic_light(1, 2),
                description="Trailers with images waiting whose link is not up, whose "
                "uplink an operator paused, or whose oldest unsent image is over 2 h old.",
                height=5,
            ),
            stat(
                "Canaries failing",
                canaries,
                thresholds=traffic_light(1, 2),
                description="Trailers whose last synthetic canary did not reach the PACS "
                "test destination in time: some hop from the gateway to PACS is broken.",
                height=5,
            ),
            stat(
                "Images past deadline",
                past_deadline,
                thresholds=traffic_light(1, 4),
                description="Images an MPPS listed as taken that are not in PACS past the "
                "completeness deadline. Amber: fewer than one woman's four views; red: more.",
                height=5,
            ),
        )
        .row(
            stat(
                "Trailers paused or capped",
                held,
                thresholds=Steps(GREEN, ((1, AMBER),)),
                description="Trailers whose uplink an operator paused or capped "
                "(trailerlinkctl uplink pause|cap): intended, but never forgotten.",
            ),
            stat(
                "Objects failed for good",
                "sum("
                + per_trailer("trailerlink_monitor_trailer_failed_objects")
                + ") or vector(0)",
                thresholds=traffic_light(1, 10),
                description="Objects out of the trailers' send queues, waiting for support "
                "(a refused upload, a failed receipt, an unsendable sealed file).",
            ),
            stat(
                "Fleet backlog",
                "sum("
                + per_trailer("trailerlink_monitor_trailer_backlog_bytes")
                + ") or vector(0)",
                unit="bytes",
                description="Sealed bytes waiting on every trailer.",
            ),
            stat(
                "Acquisition → PACS, p90",
                p90,
                unit="s",
                thresholds=Steps(GREEN, ((900, AMBER), (3600, RED))),
                description="90% of images reached PACS within this time of acquisition "
                "(last hour).",
            ),
        )
        .row(
            table(
                "Trailers: one row each",
                [
                    Column(
                        "Last heartbeat",
                        f"time() - {LAST_HEARTBEAT}",
                        "s",
                        Steps(GREEN, ((300, AMBER), (SILENT_AFTER, RED))),
                    ),
                    Column(
                        "Link",
                        per_trailer("trailerlink_monitor_trailer_link_state"),
                        mappings=LINK_STATES,
                    ),
                    Column(
                        "Uplink",
                        per_trailer("trailerlink_monitor_trailer_uplink_paused"),
                        mappings=PAUSED,
                    ),
                    Column(
                        "Operator cap",
                        per_trailer(
                            "trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second"
                        ),
                        "Bps",
                        mappings=values((0, "none", GREEN)),
                    ),
                    Column(
                        "Cap in force",
                        per_trailer("trailerlink_monitor_trailer_uplink_cap_bytes_per_second"),
                        "Bps",
                        mappings=values((0, "uncapped", GREY)),
                    ),
                    Column(
                        "Backlog",
                        per_trailer("trailerlink_monitor_trailer_backlog_objects"),
                        "short",
                    ),
                    Column(
                        "Backlog size",
                        per_trailer("trailerlink_monitor_trailer_backlog_bytes"),
                        "bytes",
                    ),
                    Column(
                        "Oldest unsent",
                        per_trailer("trailerlink_monitor_trailer_oldest_unsent_age_seconds"),
                        "s",
                        Steps(GREEN, ((STUCK_AFTER, AMBER), (TOO_OLD, RED))),
                    ),
                    Column(
                        "Goodput",
                        per_trailer("trailerlink_monitor_trailer_link_goodput_bytes_per_second"),
                        "Bps",
                    ),
                    Column(
                        "Disk free",
                        per_trailer("trailerlink_monitor_trailer_disk_free_bytes")
                        + " / "
                        + per_trailer("trailerlink_monitor_trailer_disk_total_bytes"),
                        "percentunit",
                        Steps(RED, ((0.1, AMBER), (0.2, GREEN))),
                    ),
                    Column(
                        "Canary",
                        per_trailer("trailerlink_monitor_trailer_canary_ok"),
                        mappings=CANARY,
                    ),
                    Column(
                        "Failed objects",
                        per_trailer("trailerlink_monitor_trailer_failed_objects"),
                        thresholds=Steps(GREEN, ((1, RED),)),
                    ),
                    Column(
                        "Dead letters",
                        per_trailer("trailerlink_monitor_trailer_dead_letters"),
                        thresholds=Steps(GREEN, ((1, RED),)),
                    ),
                    Column(
                        "Past deadline",
                        per_trailer("trailerlink_monitor_completeness_missing_images"),
                        thresholds=Steps(GREEN, ((1, RED),)),
                    ),
                    Column(
                        "Pending", per_trailer("trailerlink_monitor_completeness_pending_images")
                    ),
                ],
                description="Every expected or reporting trailer. Last heartbeat: seconds ago. "
                "Uplink: paused by an operator or sending. Caps in bytes/s. "
                "Past deadline / pending: images taken, not in PACS.",
            )
        )
        .row(
            series(
                "Oldest unsent image by trailer",
                Query(
                    per_trailer("trailerlink_monitor_trailer_oldest_unsent_age_seconds"),
                    "{{trailer_id}}",
                ),
                unit="s",
                description="Age since acquisition of each trailer's oldest image not yet sent.",
            ),
            series(
                "Acquisition → PACS latency",
                Query(
                    "histogram_quantile(0.5, sum by (le) (rate("
                    "trailerlink_monitor_acquisition_to_pacs_seconds_bucket[1h])))",
                    "p50",
                ),
                Query(
                    "histogram_quantile(0.95, sum by (le) (rate("
                    "trailerlink_monitor_acquisition_to_pacs_seconds_bucket[1h])))",
                    "p95",
                ),
                unit="s",
                description="From the gateway's receipt of an image to PACS.",
            ),
        )
        .row(
            series(
                "Images delivered to PACS per hour",
                Query(
                    "sum by (trailer_id) "
                    "(increase(trailerlink_monitor_objects_delivered_total[1h]))",
                    "{{trailer_id}}",
                ),
                description="First-time stores in PACS, by trailer.",
            ),
            series(
                "Completeness: pending and missing",
                Query(
                    "sum(" + per_trailer("trailerlink_monitor_completeness_pending_images") + ")",
                    "within deadline",
                ),
                Query(
                    "sum(" + per_trailer("trailerlink_monitor_completeness_missing_images") + ")",
                    "past deadline",
                ),
                description="Images MPPS listed as taken, not in PACS yet.",
            ),
        )
        .row(
            series(
                "Operator holds by trailer",
                Query(
                    per_trailer("trailerlink_monitor_trailer_uplink_paused"),
                    "{{trailer_id}} paused",
                ),
                Query(
                    per_trailer("trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second")
                    + " > bool 0",
                    "{{trailer_id}} capped",
                ),
                description="1 while an operator's pause or cap is in force.",
            ),
            series(
                "Trailer failures: objects failed for good, dead letters",
                Query(
                    per_trailer("trailerlink_monitor_trailer_failed_objects"),
                    "{{trailer_id}} failed objects",
                ),
                Query(
                    per_trailer("trailerlink_monitor_trailer_dead_letters"),
                    "{{trailer_id}} dead letters",
                ),
                description="As each trailer's newest heartbeat reports them.",
            ),
        )
        .row(
            series(
                "Uploads refused by the ingest (1 h)",
                Query(REFUSALS, "{{trailer}} {{reason}}"),
                width=24,
                description="Upload creations the ingest refused, by trailer "
                "and reason (a retired key, invalid metadata, a trailer not allowed).",
            )
        )
    )


def trailer() -> Board:
    t = '{trailer_id="$trailer"}'
    return (
        Board(
            "trailerlink-trailer",
            "trailerlink — trailer detail",
            "One trailer: its heartbeat, canary, link, operator holds and backlog.",
            variables=[
                _query_variable(
                    "trailer",
                    "Trailer",
                    "label_values(trailerlink_monitor_trailer_expected, trailer_id)",
                )
            ],
        )
        .row(
            stat(
                "Heartbeat age",
                f"time() - max(trailerlink_monitor_trailer_last_heartbeat_timestamp_seconds{t})",
                unit="s",
                thresholds=Steps(GREEN, ((300, AMBER), (SILENT_AFTER, RED))),
                description="Seconds since the trailer's newest heartbeat was sent.",
            ),
            stat(
                "Canary",
                f"max(trailerlink_monitor_trailer_canary_ok{t})",
                mappings=CANARY,
                thresholds=Steps(RED, ((1, GREEN),)),
                description="Whether the last synthetic canary reached the PACS test "
                "destination in time.",
            ),
            stat(
                "Images past deadline",
                f"max(trailerlink_monitor_completeness_missing_images{t})",
                thresholds=traffic_light(1, 4),
                description="Images listed as taken, not in PACS past the deadline.",
            ),
            stat(
                "Heartbeats missed (1 h)",
                f"sum(increase(trailerlink_monitor_heartbeats_missed_total{t}[1h]))",
                thresholds=traffic_light(1, 10),
                description="Gaps in the heartbeat sequence: heartbeats lost on the way.",
            ),
        )
        .row(
            stat(
                "Link",
                f"max(trailerlink_monitor_trailer_link_state{t})",
                mappings=LINK_STATES,
                thresholds=Steps(GREY, ((1, GREEN), (2, AMBER), (3, RED))),
                description="The link as the uplink sees it: up, degraded (the ingest "
                "answers with errors) or down.",
            ),
            stat(
                "Uplink",
                f"max(trailerlink_monitor_trailer_uplink_paused{t})",
                mappings=PAUSED,
                thresholds=Steps(GREEN, ((1, AMBER),)),
                description="Paused by an operator (trailerlinkctl uplink pause): nothing "
                "leaves however good the link.",
            ),
            stat(
                "Operator cap",
                f"max(trailerlink_monitor_trailer_uplink_operator_cap_bytes_per_second{t})",
                unit="Bps",
                mappings=values((0, "none", GREEN)),
                thresholds=Steps(GREEN, ((1, AMBER),)),
                description="The operator's upload cap (trailerlinkctl uplink cap).",
            ),
            stat(
                "Cap in force",
                f"max(trailerlink_monitor_trailer_uplink_cap_bytes_per_second{t})",
                unit="Bps",
                mappings=values((0, "uncapped", GREEN)),
                description="The lower of the bandwidth schedule's and the operator's cap.",
            ),
        )
        .row(
            series(
                "Backlog",
                Query(f"max(trailerlink_monitor_trailer_backlog_bytes{t})", "bytes waiting"),
                unit="bytes",
                description="Sealed bytes waiting on the trailer.",
            ),
            series(
                "Oldest unsent",
                Query(
                    f"max(trailerlink_monitor_trailer_oldest_unsent_age_seconds{t})",
                    "oldest unsent",
                ),
                unit="s",
                description="Age since acquisition of the oldest image not yet sent.",
            ),
        )
        .row(
            series(
                "Link goodput",
                Query(
                    f"max(trailerlink_monitor_trailer_link_goodput_bytes_per_second{t})", "goodput"
                ),
                unit="Bps",
                description="Bytes the ingest acknowledged per second.",
            ),
            series(
                "Spool disk free",
                Query(f"max(trailerlink_monitor_trailer_disk_free_bytes{t})", "free"),
                unit="bytes",
                description="Free space on the trailer's spool disk.",
            ),
        )
        .row(
            series(
                "Worklist cache age",
                Query(f"max(trailerlink_monitor_trailer_worklist_cache_age_seconds{t})", "age"),
                unit="s",
                description="How old the trailer's copy of the worklist is.",
            ),
            info_table(
                "Versions",
                f"trailerlink_monitor_trailer_version_info{t}",
                hide=("job", "instance", "trailer_id"),
                description="Software versions the trailer reports, by component.",
            ),
        )
        .row(
            stat(
                "Client certificate expires in",
                f"max(trailerlink_monitor_trailer_"
                f"certificate_expiry_timestamp_seconds{t}) - time()",
                unit="s",
                thresholds=Steps(RED, ((7 * 86400, AMBER), (14 * 86400, GREEN))),
                description="Time left on the trailer's client certificate.",
            ),
            stat(
                "Objects failed for good",
                f"max(trailerlink_monitor_trailer_failed_objects{t})",
                thresholds=Steps(GREEN, ((1, RED),)),
                description="Out of the send queue, waiting for support.",
            ),
            stat(
                "Dead letters on the trailer",
                f"max(trailerlink_monitor_trailer_dead_letters{t})",
                thresholds=Steps(GREEN, ((1, RED),)),
                description="Records the trailer's services dead-lettered.",
            ),
            stat(
                "Canary end-to-end time",
                f"max(trailerlink_monitor_trailer_canary_seconds{t})",
                unit="s",
                thresholds=Steps(GREEN, ((300, AMBER), (900, RED))),
                description="C-STORE at the gateway to ObjectDelivered, last canary.",
            ),
        )
    )


def ingest() -> Board:
    return (
        Board(
            "trailerlink-ingest",
            "trailerlink — ingest and PACS",
            "Uploads in, objects to PACS, failures and refusals",
        )
        .row(
            series(
                "Objects stored in PACS per minute",
                Query("sum(rate(trailerlink_ingest_objects_delivered_total[5m])) * 60", "stored"),
                unit="opm",
                description="Objects the ingest stored in PACS.",
            ),
            series(
                "PACS store failures per minute",
                Query(
                    "sum by (kind) (rate(trailerlink_ingest_pacs_store_failures_total[5m])) * 60",
                    "{{kind}}",
                ),
                unit="opm",
                description="C-STOREs to PACS that failed, by kind.",
            ),
        )
        .row(
            series(
                "PACS backlog",
                Query("sum(trailerlink_ingest_pacs_backlog_objects)", "waiting"),
                description="Objects unsealed and waiting for PACS.",
            ),
            series(
                "PACS C-STORE p95",
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    "(rate(trailerlink_ingest_pacs_store_seconds_bucket[5m])))",
                    "p95",
                ),
                unit="s",
                description="Time of one C-STORE to PACS.",
            ),
        )
        .row(
            series(
                "Upload bytes received",
                Query("sum(rate(trailerlink_ingest_bytes_received_total[5m]))", "received"),
                unit="Bps",
                description="Bytes the trailers uploaded.",
            ),
            series(
                "Failed outcomes by reason",
                Query(
                    "sum by (reason) (increase(trailerlink_ingest_objects_failed_total[1h]))",
                    "{{reason}}",
                ),
                description="Objects the ingest failed for good (1 h).",
            ),
        )
        .row(
            series(
                "Upload creations refused by trailer and reason (1 h)",
                Query(REFUSALS, "{{trailer}} {{reason}}"),
                width=24,
                description="A retired key, invalid metadata, a trailer not "
                "allowed: refusals that no retry will change.",
            )
        )
    )


def kafka() -> Board:
    return (
        Board(
            "trailerlink-kafka",
            "trailerlink — Kafka consumers",
            "Lag, throughput, handler time and dead letters per job and topic",
        )
        .row(
            series(
                "Consumer lag",
                Query(
                    "sum by (job, topic) (trailerlink_kafka_consumer_lag_records)",
                    "{{job}} {{topic}}",
                ),
                description="Records not yet handled.",
            ),
            series(
                "Records handled per second",
                Query(
                    "sum by (job, topic) (rate(trailerlink_kafka_messages_consumed_total[5m]))",
                    "{{job}} {{topic}}",
                ),
                unit="ops",
                description="Records consumed.",
            ),
        )
        .row(
            series(
                "Handler p95",
                Query(
                    "histogram_quantile(0.95, sum by (le, job, topic) "
                    "(rate(trailerlink_kafka_handler_seconds_bucket[5m])))",
                    "{{job}} {{topic}}",
                ),
                unit="s",
                description="Time to handle one record.",
            ),
            series(
                "Dead letters (24 h)",
                Query(
                    "sum by (job, topic) (increase(trailerlink_kafka_dead_letters_total[24h]))",
                    "{{job}} {{topic}}",
                ),
                description="Records set aside with a reason.",
            ),
        )
        .row(
            series(
                "Records produced per second",
                Query(
                    "sum by (job, topic) (rate(trailerlink_kafka_messages_produced_total[5m]))",
                    "{{job}} {{topic}}",
                ),
                unit="ops",
                description="Records produced.",
            )
        )
    )


def overview() -> Board:
    j = '{job=~"$job"}'
    return (
        Board(
            "trailerlink-overview",
            "trailerlink — overview",
            "Every service: up, versions, Kafka throughput, lag and failures",
            variables=[
                _query_variable(
                    "job", "Job", "label_values(trailerlink_build_info, job)", include_all=True
                )
            ],
        )
        .row(
            stat(
                "Services up",
                f"sum by (job) (up{j})",
                legend="{{job}}",
                width=8,
                height=8,
                thresholds=Steps(RED, ((1, GREEN),)),
                description="Scrape targets answering, by job.",
            ),
            info_table(
                "Versions running",
                f"count by (job, version) (trailerlink_build_info{j})",
                legend="{{job}} {{version}}",
                width=16,
                description="Which version each job runs (a count per version).",
            ),
        )
        .row(
            series(
                "Records produced / s",
                Query(
                    f"sum by (topic) (rate(trailerlink_kafka_messages_produced_total{j}[5m]))",
                    "{{topic}}",
                ),
                unit="ops",
                description="Records produced, by topic.",
            ),
            series(
                "Records handled / s",
                Query(
                    f"sum by (topic) (rate(trailerlink_kafka_messages_consumed_total{j}[5m]))",
                    "{{topic}}",
                ),
                unit="ops",
                description="Records consumed, by topic.",
            ),
        )
        .row(
            series(
                "Consumer lag (records)",
                Query(
                    f"sum by (job, topic) (trailerlink_kafka_consumer_lag_records{j})",
                    "{{job}} {{topic}}",
                ),
                description="Records not yet handled.",
            ),
            series(
                "Handler time p95",
                Query(
                    "histogram_quantile(0.95, sum by (le, topic) "
                    f"(rate(trailerlink_kafka_handler_seconds_bucket{j}[5m])))",
                    "{{topic}}",
                ),
                unit="s",
                description="Time to handle one record.",
            ),
        )
        .row(
            series(
                "Handler failures / s",
                Query(
                    "sum by (topic, outcome) "
                    f"(rate(trailerlink_kafka_handler_failures_total{j}[5m]))",
                    "{{topic}} {{outcome}}",
                ),
                unit="ops",
                description="Handler failures by outcome.",
            ),
            stat(
                "Dead letters (last 24 h)",
                f"sum by (topic) (increase(trailerlink_kafka_dead_letters_total{j}[24h]))",
                legend="{{topic}}",
                width=12,
                height=8,
                thresholds=Steps(GREEN, ((1, RED),)),
                description="Records set aside with a reason, by topic.",
            ),
        )
    )


BOARDS = {
    "trailerlink-fleet": fleet,
    "trailerlink-trailer": trailer,
    "trailerlink-ingest": ingest,
    "trailerlink-kafka": kafka,
    "trailerlink-overview": overview,
}


def render(board: dict[str, Any]) -> str:
    """The JSON text written for ``board``: stable key order, so regenerating is
    byte-identical."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="directory to write into")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in BOARDS.items():
        (args.out / f"{name}.json").write_text(render(make().build()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
