"""Run reports: markdown and JSON carry the metrics; the HTML page is well-formed, holds four
SVG plots, escapes and redacts what it shows, and renders in Debian Chromium (each plot's
screenshot has ink in the plot's colours)."""

from __future__ import annotations

import html.parser
import json
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phalanx
from conftest import CHROMIUM, CHROMIUM_ARGS, sim_plan
from phalanx.cost import Usage
from phalanx.events import (
    AgentInfo,
    Alert,
    AttemptFinished,
    AttemptStarted,
    RunFinished,
    RunStarted,
    TaskFailed,
    TaskInfo,
    TaskSucceeded,
)
from phalanx.exceptions import UsageError
from phalanx.journal import Journal
from phalanx.status.metrics import Metrics, metrics_from_journal
from phalanx.status.report import (
    EXCERPT,
    OUTCOME_COLOURS,
    render_html,
    render_json,
    render_markdown,
    render_report,
    report_from_events,
)
from phalanx.testing import run_virtual

PLOTS = ("timeline", "throughput", "cost", "latency")


# -- runs to report on --------------------------------------------------------------------
class Runs:
    def __init__(self, journal: Journal, failed: str, resumed: str) -> None:
        self.journal, self.failed, self.resumed = journal, failed, resumed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Two sim runs (on the virtual clock: the same runs every time) in one journal:
    ``failed`` (two roles, priced, injected faults: some tasks fail for good and their
    dependants are skipped) and ``resumed`` (stopped by its wall-time budget and resumed
    until done: three sessions)."""
    state = tmp_path_factory.mktemp("report-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("PHALANX_STATE_DIR", str(state))
    try:
        plan = sim_plan(
            40,
            agents=4,
            latency_ms=10,
            deps="layered",
            faults={"auth": 0.08, "server_error": 0.1, "rate_limited": 0.05},
            seed=11,
        )
        plan["agents"] = [{"role": "coder", "count": 3}, {"role": "tester", "count": 1}]
        plan["prices"] = {"sim": {"input": 3.0, "output": 15.0}}
        failed = run_virtual(phalanx.run(phalanx.Plan.from_dict(plan)))
        assert failed.status == "failed", failed.summary()
        assert any(t.state == "skipped" for t in failed.tasks.values())

        plan = sim_plan(24, agents=3, latency_ms=40)
        plan["limits"] = {"max_wall_seconds": 0.15}
        first = run_virtual(phalanx.run(phalanx.Plan.from_dict(plan)))
        rid, status = first.run_id, first.status
        for _ in range(10):
            if status == "succeeded":
                break
            status = run_virtual(phalanx.resume(rid)).status
        assert status == "succeeded"
        journal = Journal(state / "journal.sqlite")
        yield Runs(journal, failed.run_id, rid)
        journal.close()
    finally:
        mp.undo()


def _metrics(runs: Runs, rid: str) -> Metrics:
    return metrics_from_journal(runs.journal, rid)


# -- markdown and JSON --------------------------------------------------------------------
def test_markdown_has_the_metrics(runs: Runs) -> None:
    md = render_report(runs.journal, runs.failed, "md")
    m = _metrics(runs, runs.failed)
    for heading in ("## Metrics", "## Cost by agent", "## Tasks", "## Alerts"):
        assert heading in md
    run_row = next(line for line in md.splitlines() if line.startswith("| run |"))
    assert f"| {m.run.tasks_succeeded} |" in run_row
    assert f"| {m.run.attempts} |" in run_row
    assert f"{m.run.throughput_per_hour:,.1f}" in run_row
    assert f"{m.run.utilisation * 100:.1f}%" in run_row  # type: ignore[operator]
    assert f"${m.run.cost_usd:.4f}" in run_row
    assert "| role coder |" in md and "| role tester |" in md
    for agent in m.by_agent:
        assert f"| agent {agent} (" in md
    assert md.count("| failed |") == m.task_states["failed"]
    assert "**speedup**" in md and "(estimate)" in md
    assert "SIMULATED" in md


def test_json_has_the_metrics_and_the_plot_data(runs: Runs) -> None:
    data = json.loads(render_report(runs.journal, runs.failed, "json"))
    m = _metrics(runs, runs.failed)
    assert data["metrics"] == json.loads(json.dumps(m.to_dict()))
    assert data["run_id"] == runs.failed and data["simulated"] is True
    tasks = {t["id"]: t for t in data["tasks"]}
    assert len(tasks) == m.tasks_total == 40
    failed = [t for t in tasks.values() if t["state"] == "failed"]
    assert failed and all(t["error_class"] for t in failed)
    assert all(len(t["output"]) <= EXCERPT for t in tasks.values())
    plots = data["plots"]
    assert len(plots["timeline"]) == m.run.attempts
    assert {b["outcome"] for b in plots["timeline"]} >= {"succeeded", "failed"}
    assert [n for _, n in plots["tasks_done"]] == list(range(1, m.run.tasks_succeeded + 1))
    assert sum(b["count"] for b in plots["latency_histogram"]) == m.run.tasks_succeeded
    assert set(plots["cost_by_agent"]) == set(m.by_agent)


def test_unknown_format_is_refused(runs: Runs) -> None:
    with pytest.raises(UsageError, match="html, md or json"):
        render_report(runs.journal, runs.failed, "pdf")  # type: ignore[arg-type]


# -- the HTML page ------------------------------------------------------------------------
_VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}


class _Checker(html.parser.HTMLParser):
    """Every non-void tag closed, in order; collects the svg elements' tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs.append([])
        elif "svg" in self.stack:
            self.svgs[-1].append(tag)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "svg" in self.stack:
            self.svgs[-1].append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]} at {self.getpos()}")
            return
        self.stack.pop()


def check_html(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert checker.stack == [], f"never closed: {checker.stack}"
    return checker


@pytest.mark.parametrize("which", ["failed", "resumed"])
def test_html_is_well_formed_with_four_plots(runs: Runs, which: str) -> None:
    rid = getattr(runs, which)
    page = render_report(runs.journal, rid, "html")
    assert page.startswith("<!DOCTYPE html>")
    checker = check_html(page)
    assert page.count("<svg") == 4 and len(checker.svgs) == 4
    timeline, throughput, cost, latency = checker.svgs
    m = _metrics(runs, rid)
    assert timeline.count("rect") >= m.run.attempts  # a bar per attempt (+ the legend)
    assert "path" in throughput and "path" in cost
    assert latency.count("rect") >= 1
    if which == "failed":
        assert cost.count("rect") == len(m.by_agent)  # every agent priced: a bar each
        assert f'fill="{OUTCOME_COLOURS["failed"]}"' in page
    else:
        assert "unknown (no price)" in page  # the sim has no price here
        assert page.count('class="session"') == 2  # dashed lines where sessions 2, 3 start
        assert f'fill="{OUTCOME_COLOURS["cancelled"]}"' in page  # stopped by the budget
    for forbidden in ("<script", "http://", "https://", "src=", "@import", "url("):
        assert forbidden not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_resumed_run_reports_every_session(runs: Runs) -> None:
    m = _metrics(runs, runs.resumed)
    assert m.sessions == 3
    spans = m.session_spans
    assert m.wall_seconds == pytest.approx(sum(end - start for start, end in spans))
    for start, end in spans[:-1]:  # each stopped by limits.max_wall_seconds
        assert end - start == pytest.approx(0.15, abs=0.01)
    assert m.task_states == {"succeeded": 24}
    md = render_report(runs.journal, runs.resumed, "md")
    assert "- **sessions**: 3" in md


def test_a_session_stopped_by_its_budget_leaves_no_task_running(runs: Runs) -> None:
    events = []
    for _, e in runs.journal.read_events(runs.resumed):
        events.append(e)
        if isinstance(e, RunFinished):
            break
    assert events[-1].status == "budget_exhausted"  # type: ignore[union-attr]
    report = report_from_events(events)
    states = Counter(t.state for t in report.tasks)
    assert "running" not in states and states["pending"] > 0
    cancelled = [b for b in report.bars if b.outcome == "cancelled"]
    assert len(cancelled) == 3  # one per agent, cut at the budget
    assert all(b.end == pytest.approx(report.metrics.wall_seconds) for b in cancelled)


# -- escaping and secrets -----------------------------------------------------------------
SECRET = "canary-7f3a9c1e5b2d4086"
NASTY = '<script>alert("x")</script> & <img src=x onerror=alert(1)> | `tick`'


def _nasty_events() -> list[Any]:
    agents = (AgentInfo(name="Eve<b>", role="coder", provider="sim"),)
    tasks = (
        TaskInfo(id="t1", title=f"{NASTY} {SECRET}", category="other"),
        TaskInfo(id="t2", title="second", category="other"),
    )
    return [
        RunStarted(
            ts=10.0,
            run_id="r-nasty",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=False,
            agents=agents,
            tasks=tasks,
        ),
        AttemptStarted(ts=10.0, task_id="t1", attempt_id=1, attempt_no=1, agent="Eve<b>"),
        AttemptFinished(
            ts=11.0,
            task_id="t1",
            attempt_id=1,
            agent="Eve<b>",
            ok=True,
            duration=1.0,
            usage=Usage(input_tokens=5, output_tokens=5, cost_usd=0.001),
        ),
        TaskSucceeded(ts=11.0, task_id="t1", attempt_id=1, agent="Eve<b>"),
        AttemptStarted(ts=11.0, task_id="t2", attempt_id=2, attempt_no=1, agent="Eve<b>"),
        AttemptFinished(
            ts=12.0,
            task_id="t2",
            attempt_id=2,
            agent="Eve<b>",
            ok=False,
            duration=1.0,
            error_class="auth",
            error=f"401 for key {SECRET} {NASTY}",
        ),
        TaskFailed(ts=12.0, task_id="t2", error_class="auth", error=f"{SECRET} bad", attempts=1),
        Alert(ts=12.0, kind="hook", message=f"hook said {NASTY} Bearer {SECRET}"),
        RunFinished(ts=13.0, status="failed"),
    ]


def test_everything_is_escaped_redacted_and_excerpted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_API_KEY", SECRET)  # a secret redact knows from the environment
    output = f"{NASTY} {SECRET} " + "long answer " * 2000
    report = report_from_events(_nasty_events(), outputs={"t1": output})
    page = render_html(report)
    check_html(page)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page
    md, js = render_markdown(report), render_json(report)
    for text in (page, md, js):
        assert SECRET not in text
        assert "[redacted]" in text
        assert "long answer " * 50 not in text  # an excerpt, never the whole output
    assert "<script" not in md
    assert "\\|" in md  # pipes in a cell are escaped
    data = json.loads(js)
    t1 = next(t for t in data["tasks"] if t["id"] == "t1")
    assert len(t1["output"]) <= EXCERPT and t1["output"].startswith("<script>")  # raw in JSON


# -- Chromium -----------------------------------------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decodes an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) to RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and ctype in (2, 6), (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), prev, bpp)
        pixels += [(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + b) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + pred) & 0xFF
    return line


def _ink(pixels: list[tuple[int, int, int]]) -> tuple[int, float]:
    """(distinct colours, share of pixels not in the most common colour)."""
    counts = Counter(pixels)
    return len(counts), 1 - counts.most_common(1)[0][1] / len(pixels)


def _rgb(colour: str) -> tuple[int, int, int]:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return r, g, b


def _has(pixels: Counter[tuple[int, int, int]], colour: str, tolerance: int = 8) -> bool:
    want = _rgb(colour)
    return any(all(abs(p[i] - want[i]) <= tolerance for i in range(3)) for p in pixels)


PLOT_COLOURS = {
    "timeline": [OUTCOME_COLOURS["succeeded"], OUTCOME_COLOURS["failed"]],
    "throughput": ["#1565c0"],
    "cost": ["#6d4c41"],
    "latency": ["#00838f"],
}


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.timeout(120)
def test_html_report_opens_in_chromium_and_its_plots_render(
    runs: Runs, chromium: Any, tmp_path: Path
) -> None:
    """Acceptance: the HTML report opens in Chromium and its plots render (each plot's
    screenshot is non-blank: many colours, real ink, and its own bar/line colour)."""
    path = tmp_path / "report.html"
    path.write_text(render_report(runs.journal, runs.failed, "html"), encoding="utf-8")
    page = chromium.new_page(viewport={"width": 1000, "height": 800})
    page.set_default_timeout(30_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(path.as_uri())
        assert "phalanx report" in page.title()
        plots = page.locator("svg.plot")
        assert plots.count() == 4
        for name in PLOTS:
            element = page.locator(f"svg#plot-{name}")
            box = element.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 40, (name, box)
            width, height, pixels = png_pixels(element.screenshot(type="png"))
            assert abs(width - box["width"]) <= 2 and abs(height - box["height"]) <= 2
            colours, ink = _ink(pixels)
            assert colours > 2, f"{name}: blank ({colours} colours)"
            assert ink > 0.005, f"{name}: almost nothing drawn ({ink:.2%} ink)"
            for colour in PLOT_COLOURS[name]:
                assert _has(Counter(pixels), colour), f"{name}: nothing drawn in {colour}"
        # The same check calls an empty plot blank: the criterion tells them apart.
        page.set_content(
            '<svg id="empty" width="400" height="200" style="background:#fafafa"></svg>'
        )
        colours, ink = _ink(png_pixels(page.locator("#empty").screenshot(type="png"))[2])
        assert colours <= 2 and ink < 0.005
    finally:
        page.close()
    assert [u for u in requests if not u.startswith("file://")] == []  # self-contained


def test_png_decoder_on_a_known_image() -> None:
    """The test's own PNG decoder: a 2x2 image with every filter type."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = [bytes([255, 0, 0, 0, 255, 0]), bytes([0, 0, 255, 255, 255, 255])]
    for kind in range(5):
        raw = b""
        prev = bytes(6)
        for row in rows:
            raw += bytes([kind]) + _filter(kind, row, prev)
            prev = row
        png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        assert png_pixels(png) == (2, 2, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255,) * 3])


def _filter(kind: int, row: bytes, prev: bytes, bpp: int = 3) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
        p = a + b - c
        paeth = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
        pred = [0, a, b, (a + b) // 2, paeth][kind]
        out.append((x - pred) & 0xFF)
    return bytes(out)


def test_report_names_match_the_metric_columns() -> None:
    """The HTML metrics table has one header per column and a row per scope."""
    report = report_from_events(_nasty_events())
    page = render_html(report)
    table = re.search(r'<table class="metrics">(.*?)</table>', page, re.S)
    assert table is not None
    rows = table.group(1).count("<tr>")
    assert rows == 1 + 1 + 1 + 1  # header, run, one role, one agent


# -- markdown escapes for markdown; a cost chart only where a cost is known ----------------
def _plain_events(title: str, error: str, *, cost: float | None, simulated: bool) -> list[Any]:
    agents = (AgentInfo(name="Ada", role="coder", provider="x"),)
    tasks = (
        TaskInfo(id="t1", title=title, category="other"),
        TaskInfo(id="t2", title="second", category="other"),
    )
    usage = Usage(input_tokens=5, output_tokens=5, cost_usd=cost)
    return [
        RunStarted(
            ts=10.0,
            run_id="r-plain",
            plan="p",
            session=1,
            policy="best_fit",
            simulated=simulated,
            agents=agents,
            tasks=tasks,
        ),
        AttemptStarted(ts=10.0, task_id="t1", attempt_id=1, attempt_no=1, agent="Ada"),
        AttemptFinished(
            ts=11.0, task_id="t1", attempt_id=1, agent="Ada", ok=True, duration=1.0, usage=usage
        ),
        TaskSucceeded(ts=11.0, task_id="t1", attempt_id=1, agent="Ada"),
        AttemptStarted(ts=11.0, task_id="t2", attempt_id=2, attempt_no=1, agent="Ada"),
        AttemptFinished(
            ts=12.0,
            task_id="t2",
            attempt_id=2,
            agent="Ada",
            ok=False,
            duration=1.0,
            error_class="other",
            error=error,
            usage=usage,
        ),
        TaskFailed(ts=12.0, task_id="t2", error_class="other", error=error, attempts=1),
        RunFinished(ts=13.0, status="failed"),
    ]


def test_markdown_cells_are_escaped_for_markdown_not_for_html() -> None:
    """Quotes and ampersands show as written (no ``&#x27;``); a pipe is escaped, a newline
    joins the line; what Markdown would take for a tag or an entity is neutralised; the
    HTML page stays HTML-escaped."""
    title = 'don\'t say "ok" & <b>bold</b> | a\nsecond line'
    error = r"can't open C:\tmp\|x &lt; 5 > 3"
    report = report_from_events(_plain_events(title, error, cost=0.01, simulated=False))
    md = render_markdown(report)
    row = next(line for line in md.splitlines() if line.startswith("| t1 |"))
    assert 'don\'t say "ok" & &lt;b>bold&lt;/b> \\| a second line' in row
    for entity in ("&#x27;", "&#39;", "&quot;", "&amp; ", "&gt;"):
        assert entity not in md, entity
    assert "<b>" not in md
    failed = next(line for line in md.splitlines() if line.startswith("| t2 |"))
    # the backslash before the pipe is doubled, the pipe escaped: one cell, shown as written
    assert r"can't open C:\tmp\\\|x &amp;lt; 5 > 3" in failed
    assert failed.count(" | ") == 7  # eight cells: no pipe of the text splits the row
    page = render_html(report)
    assert "don&#x27;t say &quot;ok&quot; &amp; &lt;b&gt;bold&lt;/b&gt;" in page


def test_the_cost_chart_is_left_out_when_no_agent_has_a_price(runs: Runs) -> None:
    """An unpriced run (the sim without prices): one line says why, instead of a chart of
    "unknown" rows; a priced run keeps its bars."""
    page = render_report(runs.journal, runs.resumed, "html")
    cost = check_html(page).svgs[2]
    assert "rect" not in cost and cost.count("text") == 1  # no bars, no agent rows
    n = len(_metrics(runs, runs.resumed).by_agent)
    line = f"No cost chart: cost unknown (no price) for all {n} agents: "
    line += "a simulated run (sim provider)."
    assert f">{line}</text>" in page
    assert "USD per agent" not in page
    priced = render_report(runs.journal, runs.failed, "html")
    assert "No cost chart" not in priced and "USD per agent" in priced


def test_an_unpriced_model_says_so_in_the_cost_line() -> None:
    events = _plain_events("one", "two", cost=None, simulated=False)
    page = render_html(report_from_events(events))
    assert "for the agent: no price is known for the models used (add prices to the plan)." in page
    assert "SIMULATED" not in page
    priced = render_html(report_from_events(_plain_events("a", "b", cost=0.5, simulated=False)))
    assert "No cost chart" not in priced and "$1.0000" in priced


def test_a_simulated_run_has_no_cost_table_of_unknowns(tmp_path: Path) -> None:
    result = phalanx.run_sync(phalanx.Plan.from_dict(sim_plan(4, agents=2)), state=tmp_path)
    journal = Journal(result.journal_path)
    try:
        md = render_report(journal, result.run_id, "md")
    finally:
        journal.close()
    assert "- **cost**: n/a (simulated)" in md
    section = md.split("## Cost by agent", 1)[1].split("##", 1)[0]
    assert "No cost chart" in section and "a simulated run" in section
    assert "| unknown |" not in section
