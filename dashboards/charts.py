"""Altair charts of the dashboard, built from :mod:`dashboards.queries` results.

Why altair: real time axes in UTC, a value axis fitted to the data (never forced to zero,
so a fridge at 4 °C does not look flat), and layers (band, line, alerts, label windows)
that share one scale. Pure functions: a chart is a value, testable with ``to_dict()``.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboards.queries import SeriesView, to_ms

# One colour per layer, shown in the legend, so a reader knows what each mark is.
READINGS = "stored readings"
BAND = "aggregate min–max"
ALERT = "alert"
LABEL = "ground-truth window"
PEER_BAND = "peers' middle half (25–75 %)"
PEER_MEDIAN = "peers' median"
LAYER_COLOURS = {
    READINGS: "#1f77b4",
    BAND: "#9ecae1",
    ALERT: "#d62728",
    LABEL: "#ff7f0e",
    PEER_BAND: "#d9d9d9",
    PEER_MEDIAN: "#7f7f7f",
}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _legend(present: list[str]) -> alt.Color:
    """The colour channel every layer shares, so the legend names each kind of mark drawn."""
    scale = alt.Scale(domain=present, range=[LAYER_COLOURS[name] for name in present])
    legend = alt.Legend(title=None, orient="top", symbolOpacity=1, labelLimit=400)
    return alt.Color("what:N", scale=scale, legend=legend)


def time_extent(view: SeriesView) -> tuple[int, int]:
    """Unix ms span of what the view holds, within its range: the chart zooms to the data.

    A device seen for two minutes is not drawn as a sliver at the edge of a 1-hour axis;
    the page's caption states the range that was queried.
    """
    times = [
        to_ms(series)
        for series in (
            view.readings["time"],
            view.aggregates["start"],
            view.aggregates["end"],
            view.alerts["time"],
            view.labels["start"],
            view.labels["end"],
        )
        if not series.empty
    ]
    if not times:
        return view.start_ms, view.end_ms
    low = max(view.start_ms, min(int(t.min()) for t in times))
    high = min(view.end_ms, max(int(t.max()) for t in times))
    if high <= low:  # one instant: give it some room
        low, high = low - 30_000, high + 30_000
    return low, high


def _time_scale(view: SeriesView) -> alt.Scale:
    low, high = time_extent(view)
    return alt.Scale(type="utc", domain=[low, high])


def _time_axis(view: SeriesView, title: str | None = "time (UTC)") -> alt.Axis:
    """Clock time for a day or less; with the date beyond, so days are told apart."""
    low, high = time_extent(view)
    fmt = "%H:%M:%S" if high - low <= 86_400_000 else "%b %d %H:%M"
    return alt.Axis(title=title, format=fmt, labelOverlap=True)


def series_chart(view: SeriesView, metric: str, unit: str, height: int = 360) -> alt.LayerChart:
    """Stored readings over the aggregate band, alerts as rules, label windows shaded, and
    behind them all the peer band (the kind's other devices at the site) with its median."""
    time_scale = _time_scale(view)
    x_axis = _time_axis(view)
    present = [
        name
        for name, frame in (
            (READINGS, view.readings),
            (BAND, view.aggregates.dropna(subset=["min", "max"])),
            (ALERT, view.alerts),
            (LABEL, view.labels),
            (PEER_BAND, view.peers),
            (PEER_MEDIAN, view.peers),
        )
        if not frame.empty
    ]
    value_title = f"{metric} ({unit})" if unit else metric
    value_scale = alt.Scale(zero=False, nice=True)
    value_axis = alt.Axis(format="~g", title=value_title)
    layers: list[alt.Chart] = []

    if not view.labels.empty:
        layers.append(
            alt.Chart(view.labels.assign(what=LABEL))
            .mark_rect(opacity=0.18)
            .encode(
                x=alt.X("start:T", scale=time_scale, axis=x_axis),
                x2="end:T",
                color=_legend(present),
                tooltip=[
                    alt.Tooltip("anomaly:N"),
                    alt.Tooltip("start:T", format=_TIME_FORMAT),
                    alt.Tooltip("end:T", format=_TIME_FORMAT),
                ],
            )
        )
    if not view.peers.empty:
        peer_tooltip = [
            alt.Tooltip("start:T", format=_TIME_FORMAT, title="window start"),
            alt.Tooltip("low:Q", format=".4g", title="peers' 25 %"),
            alt.Tooltip("median:Q", format=".4g", title="peers' median"),
            alt.Tooltip("high:Q", format=".4g", title="peers' 75 %"),
            alt.Tooltip("peers:Q", title="peers"),
        ]
        layers.append(
            alt.Chart(view.peers.assign(what=PEER_BAND))
            .mark_rect(opacity=0.6, clip=True)
            .encode(
                x=alt.X("start:T", scale=time_scale, axis=x_axis),
                x2="end:T",
                y=alt.Y("low:Q", scale=value_scale, axis=value_axis),
                y2="high:Q",
                color=_legend(present),
                tooltip=peer_tooltip,
            )
        )
        layers.append(
            alt.Chart(view.peers.assign(what=PEER_MEDIAN, middle=_middle(view.peers)))
            .mark_line(strokeDash=[2, 2], strokeWidth=1.2, clip=True)
            .encode(
                x=alt.X("middle:T", scale=time_scale, axis=x_axis),
                y=alt.Y("median:Q", scale=value_scale, axis=value_axis),
                color=_legend(present),
                tooltip=peer_tooltip,
            )
        )
    band = view.aggregates.dropna(subset=["min", "max"])
    if not band.empty:
        layers.append(
            alt.Chart(band.assign(what=BAND))
            .mark_rect(opacity=0.45)
            .encode(
                x=alt.X("start:T", scale=time_scale, axis=x_axis),
                x2="end:T",
                y=alt.Y("min:Q", scale=value_scale, axis=value_axis),
                y2="max:Q",
                color=_legend(present),
                tooltip=[
                    alt.Tooltip("start:T", format=_TIME_FORMAT, title="window start"),
                    alt.Tooltip("min:Q"),
                    alt.Tooltip("mean:Q", format=".4g"),
                    alt.Tooltip("max:Q"),
                    alt.Tooltip("count:Q", title="readings"),
                    alt.Tooltip("anomalies:Q"),
                ],
            )
        )
    if not view.readings.empty:
        raw = view.every_ms is None
        layers.append(
            alt.Chart(view.readings.assign(what=READINGS))
            .mark_line(point=alt.OverlayMarkDef(size=28 if raw else 10), strokeWidth=1.6)
            .encode(
                x=alt.X("time:T", scale=time_scale, axis=x_axis),
                y=alt.Y("value:Q", scale=value_scale, axis=value_axis),
                color=_legend(present),
                tooltip=[
                    alt.Tooltip("time:T", format=_TIME_FORMAT),
                    alt.Tooltip("value:Q", format=".4g", title="value" if raw else "mean"),
                    alt.Tooltip("min:Q"),
                    alt.Tooltip("max:Q"),
                    alt.Tooltip("count:Q", title="points"),
                ],
            )
        )
    if not view.alerts.empty:
        alerts = view.alerts[["time", "severity", "state", "score", "value", "reason"]]
        rule = (
            alt.Chart(alerts.assign(what=ALERT))
            .mark_rule(strokeDash=[4, 3], strokeWidth=1.5)
            .encode(
                x=alt.X("time:T", scale=time_scale, axis=x_axis),
                color=_legend(present),
                tooltip=[
                    alt.Tooltip("time:T", format=_TIME_FORMAT),
                    alt.Tooltip("severity:N"),
                    alt.Tooltip("state:N"),
                    alt.Tooltip("score:Q", format=".4f"),
                    alt.Tooltip("value:Q"),
                    alt.Tooltip("reason:N"),
                ],
            )
        )
        marks = (
            alt.Chart(alerts.dropna(subset=["value"]).assign(what=ALERT))
            .mark_point(shape="triangle-up", size=120, filled=True)
            .encode(
                x=alt.X("time:T", scale=time_scale, axis=x_axis),
                y=alt.Y("value:Q", scale=value_scale, axis=value_axis),
                color=_legend(present),
                tooltip=[
                    alt.Tooltip("severity:N"),
                    alt.Tooltip("state:N"),
                    alt.Tooltip("score:Q", format=".4f"),
                ],
            )
        )
        layers += [rule, marks]
    return alt.LayerChart(layer=layers).properties(height=height)


def _middle(frame: pd.DataFrame) -> pd.Series:
    """The middle of each window: a median drawn there lines up with the device's points."""
    return frame["start"] + (frame["end"] - frame["start"]) / 2


def anomaly_chart(view: SeriesView, height: int = 120) -> alt.Chart:
    """Anomalous readings per aggregate window (the edge detector's count), as bars."""
    time_scale = _time_scale(view)
    return (
        alt.Chart(view.aggregates)
        .mark_rect(color="#d62728", opacity=0.7)
        .encode(
            x=alt.X("start:T", scale=time_scale, axis=_time_axis(view, title=None)),
            x2="end:T",
            y=alt.Y("anomalies:Q", title="anomalous readings"),
            tooltip=[
                alt.Tooltip("start:T", format=_TIME_FORMAT, title="window start"),
                alt.Tooltip("anomalies:Q"),
                alt.Tooltip("count:Q", title="readings"),
            ],
        )
        .properties(height=height)
    )


def grouped_bars(
    frame: pd.DataFrame, category: str, value_columns: dict[str, str], title: str
) -> alt.Chart:
    """Side-by-side bars of a few numeric columns per category (e.g. points in vs stored)."""
    long = frame.melt(
        id_vars=[category], value_vars=list(value_columns), var_name="what", value_name="n"
    )
    long["what"] = long["what"].map(value_columns)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y(f"{category}:N", title=None),
            yOffset="what:N",
            x=alt.X("n:Q", title=title, axis=alt.Axis(format="~s", tickMinStep=1)),
            color=alt.Color("what:N", legend=alt.Legend(title=None, orient="top")),
            tooltip=[f"{category}:N", "what:N", "n:Q"],
        )
    )


# -- history charts (Overview, Edge health) --------------------------------------------------

SEVERITY_COLOURS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}


def _history_axis(frame: pd.DataFrame) -> alt.Axis:
    """Clock time for up to a day of history, with the date beyond."""
    times = to_ms(frame["time"]) if not frame.empty else pd.Series([0], dtype="int64")
    fmt = "%H:%M" if int(times.max()) - int(times.min()) <= 86_400_000 else "%b %d %H:%M"
    return alt.Axis(title=None, format=fmt, labelOverlap=True)


LEGEND_COLUMNS = 2
LEGEND_ROW_PX = 22


def _series_legend() -> alt.Legend:
    """Below the chart, two to a row: a fleet's node names wrap instead of being cut."""
    return alt.Legend(title=None, orient="bottom", columns=LEGEND_COLUMNS, labelLimit=180)


def _with_legend(height: int, frame: pd.DataFrame, series: str) -> int:
    """The chart's height plus its legend's rows: the page sizes the chart as a whole, so
    without them six node names would squash the plot."""
    rows = -(-frame[series].nunique() // LEGEND_COLUMNS) if not frame.empty else 0
    return height + LEGEND_ROW_PX * rows + 20


def history_lines(
    frame: pd.DataFrame,
    value: str,
    series: str,
    title: str,
    height: int = 220,
    axis_title: bool = True,
) -> alt.Chart:
    """One line per ``series`` (a site, a node) of ``value`` over ``time``: a trend to see.

    ``axis_title=False`` leaves ``title`` to the tooltip, for a chart headed by it already.
    """
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=12), strokeWidth=1.8, interpolate="monotone")
        .encode(
            x=alt.X("time:T", scale=alt.Scale(type="utc"), axis=_history_axis(frame)),
            y=alt.Y(f"{value}:Q", title=title if axis_title else None,
                    scale=alt.Scale(zero=True, nice=True),
                    axis=alt.Axis(format=",.3~r")),
            color=alt.Color(f"{series}:N", legend=_series_legend()),
            tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT), f"{series}:N",
                     alt.Tooltip(f"{value}:Q", format=",.4~g", title=title)],
        )
        .properties(height=_with_legend(height, frame, series))
    )  # fmt: skip


def stacked_bars(
    frame: pd.DataFrame, value: str, series: str, title: str, every_ms: int, height: int = 220
) -> alt.Chart:
    """Counts per bucket as bars (a bucket wide), stacked by ``series``."""
    data = frame.assign(end=frame["time"] + pd.Timedelta(every_ms, "ms"))
    return (
        alt.Chart(data)
        .mark_bar(opacity=0.85)
        .encode(
            x=alt.X("time:T", scale=alt.Scale(type="utc"), axis=_history_axis(frame)),
            x2="end:T",
            y=alt.Y(f"sum({value}):Q", title=title, stack="zero"),
            color=alt.Color(f"{series}:N", legend=_series_legend()),
            tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT, title="from"), f"{series}:N",
                     alt.Tooltip(f"{value}:Q", title=title)],
        )
        .properties(height=_with_legend(height, frame, series))
    )  # fmt: skip


def open_by_severity(frame: pd.DataFrame, height: int = 220) -> alt.Chart:
    """Open alerts over time as areas stacked by severity, in the severities' colours."""
    present = [s for s in SEVERITY_COLOURS if s in set(frame["severity"])]
    others = sorted(set(frame["severity"]) - set(present))
    domain = present + others
    palette = [SEVERITY_COLOURS.get(s, "#7f7f7f") for s in domain]
    return (
        alt.Chart(frame)
        .mark_area(interpolate="step-before", opacity=0.8)
        .encode(
            x=alt.X("time:T", scale=alt.Scale(type="utc"), axis=_history_axis(frame)),
            y=alt.Y("open:Q", title="open alerts", stack="zero"),
            color=alt.Color("severity:N", scale=alt.Scale(domain=domain, range=palette),
                            legend=alt.Legend(title=None, orient="top")),
            order=alt.Order("severity:N"),
            tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT), "severity:N", "open:Q"],
        )
        .properties(height=height)
    )  # fmt: skip
