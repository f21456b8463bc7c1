"""Run reports: one self-contained HTML page, or markdown, or JSON with the same content.

The HTML page needs nothing outside itself (no scripts, fonts, images or stylesheets to
fetch): its plots are inline SVG drawn here — a Gantt timeline of agents x time with every
attempt as a bar coloured by outcome, tasks done over time, cost by agent and the task
latency distribution — followed by the metrics (run, roles, agents; see
:mod:`phalanx.status.metrics`), the task table and the alerts. Time on the plots is the run's
active time: the gaps between the sessions of a resumed run are cut out (dashed lines mark
where a session starts).

Everything taken from the journal is passed through :func:`phalanx.redaction.redact` and
escaped; outputs appear only as short excerpts.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..exceptions import UsageError
from ..redaction import redact
from .metrics import Figures, Metrics
from .progress import Progress
from .report_model import (
    EXCERPT,
    MAX_ROWS,
    OUTCOME_COLOURS,
    AlertRow,
    Bar,
    Report,
    TaskRow,
    build_report,
    clean,
    histogram,
    report_from_events,
)
from .snapshot import fmt_duration, status_text
from .speedup import Speedup

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = [
    "EXCERPT",
    "OUTCOME_COLOURS",
    "AlertRow",
    "Bar",
    "Report",
    "TaskRow",
    "build_report",
    "render_html",
    "render_json",
    "render_markdown",
    "render_report",
    "report_from_events",
]

Format = Literal["html", "md", "json"]


def render_report(
    journal: Journal, run_id: str, fmt: Format = "html", *, baseline: str | None = None
) -> str:
    """The report of a run as ``html`` (self-contained page), ``md`` or ``json``; with
    ``baseline`` (a sequential run's id), the speedup is measured against it.

    This is what ``phalanx report RUN_ID [--baseline RUN_ID] --format html|md|json``
    prints."""
    renderers: dict[str, Callable[[Report], str]] = {
        "html": render_html,
        "md": render_markdown,
        "json": render_json,
    }
    if fmt not in renderers:
        raise UsageError(f"unknown report format {fmt!r}: use html, md or json")
    return renderers[fmt](build_report(journal, run_id, baseline=baseline))


# -- numbers as text ----------------------------------------------------------------------
def _secs(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 1:
        return f"{x * 1000:.0f}ms"
    if x < 60:
        return f"{x:.1f}s"
    return fmt_duration(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _usd(x: float | None) -> str:
    return "unknown" if x is None else f"${x:.4f}"


_COLUMNS: tuple[tuple[str, Callable[[Figures], str]], ...] = (
    ("agents", lambda f: str(f.agents)),
    ("tasks done", lambda f: str(f.tasks_succeeded)),
    ("throughput /h", lambda f: _num(f.throughput_per_hour)),
    ("task p50", lambda f: _secs(f.task_latency.p50)),
    ("task p95", lambda f: _secs(f.task_latency.p95)),
    ("task mean", lambda f: _secs(f.task_latency.mean)),
    ("attempt p50", lambda f: _secs(f.attempt_latency.p50)),
    ("attempt p95", lambda f: _secs(f.attempt_latency.p95)),
    ("attempts", lambda f: str(f.attempts)),
    ("call retries", lambda f: str(f.call_retries)),
    ("error rate", lambda f: _pct(f.error_rate)),
    ("rate limited", lambda f: _pct(f.backpressure_rate)),
    ("utilisation", lambda f: _pct(f.utilisation)),
    ("tokens", lambda f: f"{f.spent_tokens:,}"),
    ("token efficiency", lambda f: _pct(f.token_efficiency)),
    ("comm overhead", lambda f: _pct(f.communication_overhead)),
    ("cost", lambda f: _usd(f.cost_usd)),
)


def _metric_rows(m: Metrics) -> list[list[str]]:
    rows = [["run", *(get(m.run) for _, get in _COLUMNS)]]
    rows += [[f"role {r}", *(get(f) for _, get in _COLUMNS)] for r, f in m.by_role.items()]
    rows += [
        [f"agent {a} ({m.agent_roles.get(a, '?')})", *(get(f) for _, get in _COLUMNS)]
        for a, f in m.by_agent.items()
    ]
    return rows


def _wall(m: Metrics) -> str:
    """Active time, and the calendar time when a resume put downtime between sessions."""
    calendar = m.calendar_seconds
    if m.sessions > 1 and calendar - m.wall_seconds >= 0.5:
        return (
            f"{_secs(m.wall_seconds)} active ({_secs(calendar)} calendar, "
            f"{m.sessions} sessions; the time between sessions does not count)"
        )
    return f"{_secs(m.wall_seconds)} active (sum of session spans)"


def _speedup(r: Report) -> str:
    """The speedup as claimed: measured against a like-for-like baseline, else an estimate
    (and why the baseline's wall time is not used), or ``n/a`` and why (no timing)."""
    m = r.metrics
    claim = Speedup(m.speedup, m.speedup_reason)
    if claim.value is None:  # "n/a (no timing: ...)": the baseline row says the rest
        return claim.text()
    if m.speedup_basis == "measured":
        basis = "measured against a baseline run"
        if r.baseline_run_id:
            basis = (
                f"measured against run {r.baseline_run_id}: {_secs(m.baseline_wall_seconds)} "
                f"there, {_secs(m.wall_seconds)} here"
            )
    else:
        basis = "estimate"
        if m.comparison is not None:
            basis += f"; not measured against run {m.comparison.baseline_run_id}: the runs differ"
    return f"{claim.value:,.2f}x ({basis})"


def _summary(r: Report) -> list[tuple[str, str]]:
    m = r.metrics
    p = Progress.of_counts(m.task_states)
    states = f"{p.headline()} ({p.breakdown()})" if p.total else "none"
    if m.growing:  # the plan may still add tasks: the total is what is known so far
        states += " (growing)"
    baseline = [] if m.comparison is None else [("baseline", m.comparison.sentence())]
    return [
        ("run", m.run_id or "–"),
        ("plan", m.plan or "–"),
        (
            "status",
            status_text(m.status, m.run_id)
            + (" · SIMULATED (sim provider)" if m.simulated else ""),
        ),
        ("sessions", str(m.sessions)),
        ("wall time", _wall(m)),
        ("tasks", states),
        ("lost attempts", str(m.lost_attempts)),
        ("call retries", f"{m.run.call_retries} (model calls sent again, turns kept)"),
        *baseline,
        ("speedup", _speedup(r)),
        ("scaling efficiency", _pct(m.scaling_efficiency)),
        ("cost", "n/a (simulated)" if m.simulated else _usd(m.run.cost_usd)),
    ]


# -- JSON and markdown --------------------------------------------------------------------
def _redacted(value: Any, memo: dict[str, str]) -> Any:
    """Every string in ``value`` redacted (each distinct string once)."""
    if isinstance(value, str):
        if value not in memo:
            memo[value] = redact(value)
        return memo[value]
    if isinstance(value, dict):
        return {_redacted(str(k), memo): _redacted(v, memo) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, memo) for v in value]
    return value


def render_json(r: Report) -> str:
    data = _redacted(r.to_dict(), {})
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


# what Markdown would read as markup rather than text: a tag, comment or autolink opening
# (``<b``, ``</``, ``<!``, ``<?``) and a character reference (``&amp;``, ``&#39;``)
_MD_MARKUP = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)")
_MD_PIPE = re.compile(r"(\\*)\|")


def _md(text: object) -> str:
    """A Markdown table cell, shown as written: one line, pipes escaped, and only what
    Markdown would read as raw HTML or a character reference neutralised (``<b`` becomes
    ``&lt;b``); quotes, ``&`` and ``>`` stay as they are (no HTML escaping)."""
    flat = " ".join(redact(str(text)).split())
    flat = _MD_MARKUP.sub(lambda m: "&lt;" if m.group() == "<" else "&amp;", flat)
    # a pipe splits the row unless escaped; backslashes before it are doubled, so that a
    # backslash written before a pipe stays text and the pipe stays in its cell
    return _MD_PIPE.sub(lambda m: m.group(1) * 2 + "\\|", flat)


def _md_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(r: Report) -> str:
    m = r.metrics
    out = [f"# phalanx report · {_md(r.title or m.run_id)}", ""]
    out += [f"- **{k}**: {_md(v)}" for k, v in _summary(r)]
    out += ["", "## Metrics", ""]
    out += _md_table(["scope", *(c for c, _ in _COLUMNS)], _metric_rows(m))
    out += ["", "## Cost by agent", ""]
    unknown = _cost_unknown(r)  # one line says why, instead of a row of "unknown" per agent
    out += (
        [_md(unknown)]
        if unknown is not None
        else _md_table(
            ["agent", "cost", "tokens"],
            [(a, _usd(f.cost_usd), f"{f.spent_tokens:,}") for a, f in m.by_agent.items()],
        )
    )
    out += ["", "## Task latency distribution", ""]
    out += _md_table(
        ["from", "to", "tasks"], [(_secs(lo), _secs(hi), n) for lo, hi, n in histogram(m)]
    )
    out += ["", "## Tasks", ""]
    out += _md_table(
        ["id", "title", "state", "agent", "attempts", "error class", "error", "output"],
        [_task_cells(t) for t in r.tasks[:MAX_ROWS]],
    )
    out += _more(len(r.tasks), "tasks")
    out += ["", "## Alerts", ""]
    out += _md_table(
        ["at", "kind", "agent", "message"],
        [(_secs(a.at), a.kind, a.agent or "", a.message) for a in r.alerts[:MAX_ROWS]],
    )
    out += _more(len(r.alerts), "alerts")
    if r.awaiting:
        out += ["", "## Awaiting approval", ""]
        out += _md_table(["task", "since", "why", "decide with"], _awaiting_rows(r))
    return "\n".join(out) + "\n"


def _awaiting_rows(r: Report) -> list[tuple[str, str, str, str]]:
    return [(w.task, _secs(w.since), f"{w.reason} ({w.by})", w.command) for w in r.awaiting]


def _task_cells(t: TaskRow) -> list[object]:
    agent, cls = t.agent or "", t.error_class or ""
    return [t.id, t.title, t.state, agent, t.attempts, cls, t.error, t.output]


def _more(n: int, what: str) -> list[str]:
    return ["", f"… and {n - MAX_ROWS} more {what}"] if n > MAX_ROWS else []


# -- SVG plots ----------------------------------------------------------------------------
_W = 880  # plot width
_LEFT = 150  # room for row labels
_PAD = 16


def _e(text: object) -> str:
    """Redacted and escaped for HTML text and attribute values."""
    return html.escape(redact(str(text)), quote=True)


def _f(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _svg(name: str, height: float, label: str, body: list[str]) -> str:
    return (
        f'<svg class="plot" id="plot-{name}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{_W}" height="{_f(height)}" viewBox="0 0 {_W} {_f(height)}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: object, anchor: str = "start", size: int = 11) -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" font-size="{size}" text-anchor="{anchor}">{_e(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, tip: str = "") -> str:
    title = f"<title>{_e(tip)}</title>" if tip else ""
    return (
        f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(max(w, 1.0))}" height="{_f(h)}" '
        f'fill="{fill}">{title}</rect>'
    )


def _axes(x0: float, y0: float, x1: float, y1: float) -> str:
    """An L-shaped axis: up the left side from (x0, y1) to (x0, y0) and along to (x1, y1)."""
    d = f"M{_f(x0)} {_f(y0)} V{_f(y1)} H{_f(x1)}"
    return f'<path class="axis" d="{d}" fill="none" stroke="#555" stroke-width="1"/>'


def _ticks(top: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _x_ticks(x0: float, x1: float, y: float, span: float, fmt: Callable[[float], str]) -> list[str]:
    out = []
    ticks = _ticks(span)
    top = ticks[-1] or 1.0
    for t in ticks:
        x = x0 + (x1 - x0) * t / top
        out.append(f'<path d="M{_f(x)} {_f(y)} v4" stroke="#555"/>')
        out.append(_text(x, y + 16, fmt(t), "middle", 10))
    return out


def _gantt(r: Report) -> str:
    agents = list(r.agents) or sorted({b.agent for b in r.bars})
    shown = agents[:MAX_ROWS]
    row = 18 if len(shown) <= 60 else max(3, 1080 // max(1, len(shown)))
    top, plot_h = 10.0, row * max(1, len(shown))
    span = max([r.metrics.wall_seconds, *(b.end for b in r.bars)]) or 1.0
    top_tick = _ticks(span)[-1] or 1.0
    x0, x1 = float(_LEFT), float(_W - _PAD)
    scale = (x1 - x0) / top_tick
    index = {a: i for i, a in enumerate(shown)}
    body = [_axes(x0, top, x1, top + plot_h)]
    for a, i in index.items():
        if row >= 12:
            body.append(_text(x0 - 6, top + i * row + row * 0.7, clean(a, 22), "end"))
    for b in r.bars:
        if b.agent in index:
            body.append(_gantt_bar(b, x0, top + index[b.agent] * row, scale, row))
    for s in r.session_starts:
        x = _f(x0 + s * scale)
        body.append(
            f'<path class="session" d="M{x} {_f(top)} V{_f(top + plot_h)}" stroke="#000" '
            'stroke-dasharray="4 3"/>'
        )
    body += _x_ticks(x0, x1, top + plot_h, span, _secs)
    body += _legend(top + plot_h + 34)
    label = f"Timeline: {len(r.bars)} attempts on {len(agents)} agents over {_secs(span)}"
    return _svg("timeline", top + plot_h + 56, label, body)


def _gantt_bar(b: Bar, x0: float, y: float, scale: float, row: float) -> str:
    tip = f"{b.task_id} #{b.attempt_id} by {b.agent}: {b.outcome}, {_secs(b.end - b.start)}"
    colour = OUTCOME_COLOURS.get(b.outcome, "#000")
    return _rect(x0 + b.start * scale, y + 2, (b.end - b.start) * scale, row - 4, colour, tip)


def _legend(y: float) -> list[str]:
    out, x = [], float(_LEFT)
    for name, colour in OUTCOME_COLOURS.items():
        out.append(_rect(x, y - 9, 10, 10, colour))
        out.append(_text(x + 14, y, name.replace("_", " ")))
        x += 24 + 7 * len(name)
    return out


def _throughput(r: Report) -> str:
    h, top, x0, x1 = 220.0, 10.0, float(_LEFT), float(_W - _PAD)
    span = r.metrics.wall_seconds or max(r.completions, default=0.0) or 1.0
    xt = _ticks(span)[-1] or 1.0
    y_ticks = _ticks(max(1, len(r.completions)))
    yt, ybase = y_ticks[-1] or 1.0, top + h

    def x(t: float) -> str:
        return _f(x0 + (x1 - x0) * t / xt)

    def y(n: float) -> str:
        return _f(ybase - h * n / yt)

    steps = [f"H{x(t)} V{y(i + 1)}" for i, t in enumerate(r.completions)]
    d = " ".join([f"M{x(0.0)} {y(0)}", *steps, f"H{x(span)}"])
    body = [
        _axes(x0, top, x1, ybase),
        f'<path class="series" d="{d}" fill="none" stroke="#1565c0" stroke-width="2"/>',
    ]
    body += [_text(x0 - 6, float(y(v)) + 4, f"{v:g}", "end", 10) for v in y_ticks]
    body += _x_ticks(x0, x1, ybase, span, _secs)
    label = f"Tasks done over time: {len(r.completions)} in {_secs(span)}"
    return _svg("throughput", ybase + 28, label, body)


def _cost_unknown(r: Report) -> str | None:
    """Why no agent's cost is known, in one line; None when some agent's is (or there are
    no agents): then the chart is drawn."""
    agents = r.metrics.by_agent
    if not agents or any(f.cost_usd is not None for f in agents.values()):
        return None
    why = (
        "a simulated run (sim provider)"
        if r.metrics.simulated
        else "no price is known for the models used (add prices to the plan)"
    )
    n = len(agents)
    who = "the agent" if n == 1 else f"all {n} agents"
    return f"No cost chart: cost unknown (no price) for {who}: {why}."


def _cost(r: Report) -> str:
    reason = _cost_unknown(r)
    if reason is not None:  # one line says why, instead of a row of "unknown" per agent
        x0, x1, top = float(_LEFT), float(_W - _PAD), 10.0
        body = [_axes(x0, top, x1, top + 24), _text(x0 + 8, top + 16, reason)]
        return _svg("cost", top + 38, reason, body)
    figures = sorted(r.metrics.by_agent.items(), key=lambda kv: -(kv[1].cost_usd or 0.0))[:MAX_ROWS]
    row, top = 18, 10.0
    x0, x1 = float(_LEFT), float(_W - _PAD - 70)
    known = [f.cost_usd for _, f in figures if f.cost_usd is not None]
    peak = max(known, default=0.0) or 1.0
    h = row * max(1, len(figures))
    body = [_axes(x0, top, x1, top + h)]
    for i, (agent, f) in enumerate(figures):
        y = top + i * row
        body.append(_text(x0 - 6, y + row * 0.7, clean(agent, 22), "end"))
        if f.cost_usd is None:
            body.append(_text(x0 + 6, y + row * 0.7, "unknown (no price)"))
            continue
        w = (x1 - x0) * f.cost_usd / peak
        body.append(_rect(x0, y + 2, w, row - 4, "#6d4c41", f"{agent}: {_usd(f.cost_usd)}"))
        body.append(_text(x0 + max(w, 1.0) + 4, y + row * 0.7, _usd(f.cost_usd)))
    total = _usd(r.metrics.run.cost_usd)
    return _svg("cost", top + h + 14, f"Cost by agent (total {total})", body)


def _latency(r: Report) -> str:
    bins = histogram(r.metrics)
    h, top, x0, x1 = 180.0, 10.0, float(_LEFT), float(_W - _PAD)
    ybase = top + h
    body = [_axes(x0, top, x1, ybase)]
    if not bins:
        body.append(_text((x0 + x1) / 2, top + h / 2, "no succeeded tasks", "middle"))
    peak = _ticks(max((n for _, _, n in bins), default=1))[-1] or 1.0
    width = (x1 - x0) / max(1, len(bins))
    for i, (lo, hi, n) in enumerate(bins):
        bh = h * n / peak
        tip = f"{n} tasks took {_secs(lo)} to {_secs(hi)}"
        body.append(_rect(x0 + i * width + 1, ybase - bh, width - 2, bh, "#00838f", tip))
    for v in _ticks(peak):
        body.append(_text(x0 - 6, ybase - h * v / peak + 4, f"{v:g}", "end", 10))
    if bins:
        body.append(_text(x0, ybase + 16, _secs(bins[0][0]), "start", 10))
        body.append(_text(x1, ybase + 16, _secs(bins[-1][1]), "end", 10))
    label = f"Task latency distribution ({r.metrics.run.task_latency.count} tasks)"
    return _svg("latency", ybase + 28, label, body)


# -- HTML ---------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
background:#fff}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right}
figure{margin:12px 0}figcaption{font-size:12px;color:#555}
svg.plot{background:#fafafa;border:1px solid #ddd;display:block}
svg text{fill:#333;font-family:inherit}
.sim{color:#b71c1c;font-weight:bold}.wide{overflow-x:auto}
.state-failed{color:#c62828}.state-skipped{color:#777}.state-succeeded{color:#2e7d32}
.progress{display:flex;height:10px;background:#eee;border-radius:4px;overflow:hidden;max-width:720px}
.seg{display:block;height:100%}.headline{font-weight:600;margin:4px 0}.headline.bad{color:#c62828}
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{_e(cls)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _cost_figure(r: Report) -> str:
    if _cost_unknown(r) is not None:  # the plot is the one line that says why: no caption
        return f"<figure>{_cost(r)}</figure>"
    return _figure(_cost(r), "USD per agent; unknown when the model has no price.")


def _task_table(r: Report) -> str:
    head = ["id", "title", "state", "agent", "attempts", "error class", "error", "output"]
    rows = []
    for t in r.tasks[:MAX_ROWS]:
        cells = [_e(c) for c in _task_cells(t)]
        cells[2] = f'<span class="state-{_e(t.state)}">{cells[2]}</span>'
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    more = "".join(f"<p>{_e(line)}</p>" for line in _more(len(r.tasks), "tasks") if line)
    body = "".join(rows)
    return f'<table class="tasks"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>{more}'


_SEGMENT_COLOURS = {
    "succeeded": OUTCOME_COLOURS["succeeded"],
    "failed": OUTCOME_COLOURS["failed"],
    "skipped": "#9e9e9e",
    "running": OUTCOME_COLOURS["running"],
    "waiting": "#ef6c00",
    "pending": "#e0e0e0",
}


def _progress_html(p: Progress) -> str:
    """The headline (failures named) over a bar with one segment per task state."""
    cls = "headline bad" if p.failed else "headline"
    segs = "".join(
        f'<span class="seg seg-{s}" style="width:{n}%;background:{_SEGMENT_COLOURS[s]}" '
        f'title="{p.count(s)} {s}"></span>'
        for s, n in p.segments(100)
    )
    return f'<p class="{cls}">{_e(p.headline())}</p><div class="progress">{segs}</div>'


def render_html(r: Report) -> str:
    m = r.metrics
    title = f"phalanx report · {r.title or m.run_id}"
    sim = '<p class="sim">SIMULATED run (sim provider)</p>' if m.simulated else ""
    alerts = [(_secs(a.at), a.kind, a.agent or "", a.message) for a in r.alerts[:MAX_ROWS]]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>{sim}",
        _progress_html(Progress.of_counts(m.task_states)),
        _table(["measure", "value"], _summary(r), "summary"),
        *(
            ["<h2>Awaiting approval</h2>"]
            + [_table(["task", "since", "why", "decide with"], _awaiting_rows(r), "awaiting")]
            if r.awaiting
            else []
        ),
        "<h2>Timeline</h2>",
        _figure(_gantt(r), "Attempts per agent over active time, coloured by outcome."),
        "<h2>Throughput</h2>",
        _figure(_throughput(r), "Cumulative tasks done over active time."),
        "<h2>Cost by agent</h2>",
        _cost_figure(r),
        "<h2>Latency</h2>",
        _figure(_latency(r), "Task latency: first attempt start to success."),
        "<h2>Metrics</h2>",
        '<div class="wide">',
        _table(["scope", *(c for c, _ in _COLUMNS)], _metric_rows(m), "metrics"),
        "</div>",
        "<h2>Tasks</h2>",
        _task_table(r),
        "<h2>Alerts</h2>",
        _table(["at", "kind", "agent", "message"], alerts, "alerts") if alerts else "<p>none</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
