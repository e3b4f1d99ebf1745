"""``ratchet report``: one self-contained HTML page of a run, checked in a real browser.

The page is loaded in headless Chromium: the dumped DOM must hold the expected SVG marks
(one point per generation, two bars per generation and chart, one node per generation, one
cell per task and generation), laid out with a size (a probe script, added to a copy of the
page only, measures each mark), and the screenshot must show the charts' colours. Without
/usr/bin/chromium those checks skip, unless RATCHET_REQUIRE_DOCKER=1 (CI), where they fail.
The real run is made in process, like tests/harness/test_loop.py, on a three-task slice.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.read.report import (
    Change,
    GenerationSummary,
    RunReport,
    diff_lines,
    load_run,
    render_report,
    write_report,
)

CHROMIUM = Path("/usr/bin/chromium")
RATCHET = str(Path(sys.executable).with_name("ratchet"))
SLICE = ("toolz__toolz-1.2.0__dissoc-many-keys", "isodate__isodate-0.7.2__december-month-carry",
         "toolz__toolz-1.2.0__get-in-non-subscriptable")
ACCEPTED_GREEN, AGENT_BLUE = bytes.fromhex("1a7f37"), bytes.fromhex("0969da")

# The probe: each chart's marks that the browser laid out with a size, by kind, written on
# the chart as data-drawn-KIND (a zero-cost bar still has a width).
PROBE = """<script>
for (const svg of document.querySelectorAll("svg[data-chart]")) {
  const box = svg.getBoundingClientRect();
  svg.setAttribute("data-box", box.width > 100 && box.height > 20 ? "ok" : "empty");
  const drawn = {};
  for (const mark of svg.querySelectorAll("[data-mark]")) {
    const b = mark.getBBox();
    if (b.width > 0 || b.height > 0) drawn[mark.dataset.mark] = (drawn[mark.dataset.mark] || 0) + 1;
  }
  for (const [kind, n] of Object.entries(drawn)) svg.setAttribute("data-drawn-" + kind, n);
}
</script>"""


# -- the browser ------------------------------------------------------------------------------


def _chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} is absent (Debian package `chromium`; .ci/setup installs it)"
    if os.environ.get("RATCHET_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}; RATCHET_REQUIRE_DOCKER=1: the browser checks may not skip")
    pytest.skip(reason)


def _browse(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}", *args,
               page.resolve().as_uri()]
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


class _Charts(HTMLParser):
    """The dumped DOM's charts: each svg[data-chart]'s attributes, and its marks by class."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, str]] = {}
        self.marks: dict[str, Counter] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self._open.append(attrs.get("data-chart"))
            if attrs.get("data-chart"):
                self.charts[attrs["data-chart"]] = attrs
                self.marks[attrs["data-chart"]] = Counter()
        elif self._open and self._open[-1] and "data-mark" in attrs:
            self.marks[self._open[-1]][attrs["data-mark"]] += 1
            for name in (attrs.get("class") or "").split():
                self.marks[self._open[-1]][f"{attrs['data-mark']}.{name}"] += 1

    def handle_endtag(self, tag):
        if tag == "svg" and self._open:
            self._open.pop()


class _References(HTMLParser):
    """What a page would fetch: elements that load things, attributes that point, CSS urls."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "img", "iframe", "object", "embed", "image", "use"):
            self.found.append(f"<{tag}>")
        self.found += [f"{tag} {name}={value}" for name, value in attrs
                       if name in ("src", "href", "xlink:href", "srcset", "action", "poster")
                       or "url(" in (value or "")]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style and re.search(r"url\(|@import", data):
            self.found.append("a url in <style>")


def _outside_references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.found


def _expected(report: RunReport) -> dict[str, dict[str, int]]:
    known = {g.number for g in report.generations}
    n = len(report.generations)
    return {"rate": {"point": n, "line": int(any(g.status == "accepted" for g in report.generations))},
            "cost": {"bar": 2 * n}, "tokens": {"bar": 2 * n},
            "lineage": {"node": n, "edge": sum(1 for g in report.generations if g.parent in known)},
            "grid": {"cell": n * len(report.tasks)}}


def _check_drawn(page: Path, report: RunReport, tmp: Path) -> _Charts:
    """Load ``page`` in Chromium: every expected mark is in the DOM and has a size."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    parsed = _Charts()
    parsed.feed(_browse(probed, tmp, "--dump-dom").stdout)
    for chart, marks in _expected(report).items():
        assert chart in parsed.charts, f"no {chart} chart in the DOM"
        assert parsed.charts[chart].get("data-box") == "ok", f"the {chart} chart has no size"
        for kind, count in marks.items():
            assert parsed.marks[chart][kind] == count, (chart, kind, parsed.marks[chart])
            drawn = int(parsed.charts[chart].get(f"data-drawn-{kind}", 0))
            assert drawn == count, f"{chart}: {drawn} of {count} {kind}(s) laid out"
    return parsed


def _png_colours(png: bytes) -> set[bytes]:
    """The distinct RGB colours of an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    previous, seen = bytearray(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, previous))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        seen.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        previous = line
    return seen


def _check_screenshot(page: Path, tmp: Path) -> Path:
    shot = tmp / "report.png"
    _browse(page, tmp, f"--screenshot={shot}", "--window-size=1280,2000")
    colours = _png_colours(shot.read_bytes())
    assert len(colours) > 50, f"the screenshot is all but blank: {len(colours)} colours"
    assert ACCEPTED_GREEN in colours and AGENT_BLUE in colours, "no accepted mark or agent bar painted"
    return shot


# -- a report made from data: every kind of generation, hostile text --------------------------

HOSTILE = "</pre><script>alert(1)</script><img src=x onerror=alert(2)>"


def _made_up_report() -> RunReport:
    tasks = ["a__task-1", "b__task-<2>", "c__task-3"]
    every = dict.fromkeys(tasks, True)
    gens = [
        GenerationSummary(0, None, "accepted", "the seed agent", resolved=1, tasks=3, evaluated=3,
                          outcomes={**every, tasks[1]: False, tasks[2]: False}, agent_tokens=3300),
        GenerationSummary(1, 0, "accepted", HOSTILE, resolved=3, tasks=3, evaluated=3, outcomes=every,
                          agent_cost_usd=0.02, meta_cost_usd=0.05, agent_tokens=3300, meta_tokens=6400,
                          diagnosis=HOSTILE),
        GenerationSummary(2, 1, "rejected", "narrow it", resolved=1, tasks=3, evaluated=1,
                          outcomes={tasks[0]: True}, agent_cost_usd=0.01, meta_cost_usd=0.05),
        GenerationSummary(3, 1, "invalid", "", reason="the answer holds no edit", meta_cost_usd=0.04),
        GenerationSummary(4, 0, "rejected", "another line", resolved=1, tasks=3, evaluated=3,
                          outcomes={**every, tasks[0]: False, tasks[1]: False}, agent_cost_usd=0.02),
        GenerationSummary(5, 1, "pending", "in flight"),
    ]
    change = Change(1, 0, HOSTILE, HOSTILE, diff_lines(
        "diff --git a/agent_seed/x.py b/agent_seed/x.py\n@@ -1 +1 @@\n-old\n+" + HOSTILE + "\n"))
    return RunReport(run="made-up", settings={"suite": "s", "scripted": "demo"}, generations=gens,
                     tasks=sorted(tasks), changes=[change], best=1, spent_usd=0.19,
                     end_reason="run_stopped: interrupted", created="now")


def test_model_written_text_is_escaped_and_the_page_needs_nothing_outside_it():
    """Diagnoses, headlines, diffs and task ids are text, never markup; the page loads no
    script, style, font or image from anywhere (it must open offline, as an attachment)."""
    html = render_report(_made_up_report())
    assert "<script" not in html and "<img" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # headline, diagnosis, diff
    assert "b__task-&lt;2&gt;" in html
    assert _outside_references(html) == []
    assert "SCRIPTED" in html and "[scripted]" in html


def test_the_charts_have_a_mark_for_every_generation():
    """Layout is pure data: one rate mark per generation (invalid ones on the baseline), two
    stacked bars per generation, one tree node per generation, a cell per task × generation."""
    from harness.read.report import lineage_tree, outcome_grid, rate_chart, spend_chart

    report = _made_up_report()
    rate = rate_chart(report)
    assert [m.kind for m in rate.marks] == ["accepted", "accepted", "rejected early", "invalid",
                                            "rejected", "pending"]
    assert rate.marks[3].y == rate.height - rate.bottom  # invalid: on the baseline
    best_ys = {float(p.split(",")[1]) for p in rate.line.split()}
    assert best_ys == {round(rate.marks[0].y, 1), round(rate.marks[1].y, 1)}  # moves at acceptances only
    cost = spend_chart(report, "cost")
    assert len(cost.marks) == 12 and cost.note == ""
    tree = lineage_tree(report)
    assert tree.numbers == [0, 1, 2, 3, 5, 4]  # each under its parent, children in birth order
    grid = outcome_grid(report)
    assert Counter(c.kind for c in grid.cells) == {"notrun": 8, "resolved": 6, "unresolved": 4}


def test_a_made_up_report_draws_in_chromium(tmp_path):
    report = _made_up_report()
    page = tmp_path / "made-up.html"
    page.write_text(render_report(report))
    parsed = _check_drawn(page, report, tmp_path)
    assert parsed.marks["rate"]["point.invalid"] == 1 and parsed.marks["lineage"]["node.accepted"] == 2


def test_report_of_a_missing_run_says_so(tmp_path):
    out = subprocess.run([RATCHET, "init", str(tmp_path / "ws")], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([RATCHET, "report", "nope", "--workspace", str(tmp_path / "ws")],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 2 and "no run nope" in out.stderr


# -- a real run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, docker_daemon) -> tuple[Path, str]:
    """The scripted demo on a three-task slice, two generations: gen 1 accepted, gen 2 rejected."""
    from benchmark import Grader, ImageBuilder, load_suite
    from harness.cli.demo import demo_agent_script, demo_meta_script
    from harness.models.gateway import OpenAIUpstream
    from harness.loop.compose import build_controller
    from harness.loop.settings import LoopSettings
    from harness.models.scripted_model import ScriptedModelServer

    tmp = tmp_path_factory.mktemp("report-run")
    by_id = {t.instance_id: t for t in load_suite("quickstart").tasks}
    suite = tmp / "slice.jsonl"
    suite.write_text("".join(by_id[i].model_dump_json(exclude_none=True) + "\n" for i in SLICE))
    tasks = load_suite(str(suite)).tasks
    out = subprocess.run([RATCHET, "init", str(tmp / "ws")], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    settings = LoopSettings(run="rep", suite=str(suite), generations=2, agent_model="scripted",
                            meta_model="scripted", scripted="demo", workers=2,
                            acceptance="strict")  # a deterministic scripted model: strict is exact
    (tmp / "ws" / "runs" / "rep").mkdir(parents=True)
    settings.save(tmp / "ws" / "runs" / "rep" / "settings.json")  # as `ratchet run` does
    with ScriptedModelServer(demo_agent_script(tasks)) as agent, \
            ScriptedModelServer(demo_meta_script()) as meta:
        state = build_controller(tmp / "ws", settings, tasks, Grader(ImageBuilder(), tmp / "grades"),
                                 OpenAIUpstream(agent.base_url, "x"), OpenAIUpstream(meta.base_url, "x")).run()
    assert {n: g.verdict for n, g in state.generations.items()} == {0: "accepted", 1: "accepted",
                                                                    2: "rejected"}
    return tmp / "ws", "rep"


@pytest.mark.docker
def test_report_of_a_real_run_draws_in_chromium(real_run, tmp_path):
    workspace, run = real_run
    out = subprocess.run([RATCHET, "report", run, "--workspace", str(workspace)],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = workspace / "runs" / run / "report.html"  # the default place
    assert page.is_file()
    html = page.read_text()
    assert "SCRIPTED run (demo)" in html
    assert _outside_references(html) == []
    report = load_run(workspace, run)
    assert [g.status for g in report.generations] == ["accepted", "accepted", "rejected"]
    assert len(report.tasks) == 3 and [g.resolved for g in report.generations][:2] == [1, 3]
    # gen 2 loses a toolz pair at a look and is stopped there; its rate is over the runs made
    gen2 = report.generations[2]
    assert gen2.stopped_early and gen2.evaluated in (1, 2) and gen2.resolved == gen2.evaluated - 1
    assert report.generations[1].meta_tokens > 0 and report.generations[0].agent_tokens > 0
    [change] = report.changes  # the accepted fix: its diagnosis and its diff, escaped
    assert change.generation == 1 and "```sh" in change.diagnosis
    assert any(line.kind == "add" and "(?:bash|sh|shell)" in line.text for line in change.diff)
    assert "(?:bash|sh|shell)" in html
    parsed = _check_drawn(page, report, tmp_path)
    assert parsed.marks["grid"]["cell.resolved"] == 1 + 3 + 1
    assert parsed.marks["lineage"]["node.accepted"] == 2 and parsed.marks["rate"]["point.rejected"] == 1
    _check_screenshot(page, tmp_path)


@pytest.mark.docker
def test_diff_html_writes_the_reports_diff_view(real_run, tmp_path):
    workspace, run = real_run
    target = tmp_path / "d.html"
    out = subprocess.run([RATCHET, "diff", run, "0", "1", "--html", "-o", str(target),
                          "--workspace", str(workspace)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    html = target.read_text()
    assert 'class="add"' in html and "(?:bash|sh|shell)" in html and "gen 0 → gen 1" in html
    assert "```sh" in html  # gen 1's parent is 0: its diagnosis comes along
    out = subprocess.run([RATCHET, "diff", run, "0", "7", "--html", "--workspace", str(workspace)],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 2 and "no generation 7" in out.stderr
    written = write_report(workspace, run, tmp_path / "elsewhere" / "r.html")
    assert written.is_file()


def test_the_report_split_is_drawn_as_the_best_held_out_curve(tmp_path):
    """The report-only split is run for the best only (gen 0 and each acceptance); the page
    draws it as its own step line, moving at acceptances, and names the split."""
    import json
    from dataclasses import replace

    from harness.loop.journal import Journal
    from harness.read.report import load_run, rate_chart

    report = _made_up_report()
    report.settings["report_split"] = "heldout"
    report.generations[0] = replace(report.generations[0], held_out=(2, 10))
    report.generations[1] = replace(report.generations[1], held_out=(6, 10))
    rate = rate_chart(report)
    assert [m.title.split(":")[1].strip() for m in rate.heldout_marks] == [
        "2/10 resolved (20%)", "6/10 resolved (60%)"]
    ys = {float(p.split(",")[1]) for p in rate.heldout_line.split()}
    assert ys == {round(m.y, 1) for m in rate.heldout_marks}
    html = render_report(report)
    assert html.count('data-mark="heldout"') == 2 and 'data-mark="heldout-line"' in html
    assert "report-only split heldout" in html and "report-only <b>heldout</b>" in html
    assert 'data-mark="heldout' not in render_report(_made_up_report())  # no split, no curve

    run = tmp_path / "runs" / "r"
    (run / "gens" / "0000").mkdir(parents=True)
    journal = Journal(run / "journal.jsonl")
    journal.append("run_started", run="r", resumed=False, settings={"report_split": "heldout"})
    journal.append("generation_started", generation=0, parent=None)
    journal.append("decided", generation=0, verdict="accepted", reason="generation 0",
                   score={"resolved": 1, "tasks": 3, "evaluated": 3, "rate": 1 / 3})
    (run / "gens" / "0000" / "metrics.json").write_text(json.dumps({"report_split": {
        "split": "heldout", "resolved": 4, "tasks": 17, "evaluated": 17}}))
    assert load_run(tmp_path, "r", with_diffs=False).generations[0].held_out == (4, 17)
