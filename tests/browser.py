"""Helpers for driving the dashboard in headless Chromium (Playwright), as a person would.

A server is a real ``streamlit run dashboard/app.py`` on a free 127.0.0.1 port; cells are
clicked by pixel position, measured from the chart's cells inside the page.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamlit_server(
    *app_args: str, env: dict[str, str] | None = None, app: Path | None = None
) -> Iterator[str]:
    """Run the dashboard (or another Streamlit ``app``); yields its base URL; stops it after."""
    port = free_port()
    home = tempfile.mkdtemp(prefix="st-home-")
    command = [
        sys.executable, "-m", "streamlit", "run", str(app or ROOT / "dashboard" / "app.py"),
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false",
    ]  # fmt: skip
    if app_args:
        command += ["--", *app_args]
    log = open(Path(home) / "server.log", "w+")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": home, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _wait_healthy(url: str, process: subprocess.Popen, log) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"streamlit exited early:\n{log.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("streamlit did not become healthy in 60 s")


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``); each ``new_context()`` is a fresh profile."""
    from playwright.sync_api import sync_playwright

    home = tempfile.mkdtemp(prefix="chromium-home-")
    env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": home, "XDG_CACHE_HOME": home}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env
        )
        try:
            yield browser
        finally:
            browser.close()
            shutil.rmtree(home, ignore_errors=True)


def new_page(browser):  # type: ignore[no-untyped-def]
    """A page in a fresh context (own cookies and storage), sized like a laptop screen."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    return context.new_page()


@contextmanager
def open_dashboard(*app_args: str, path: str = "", timeout: float = 120_000) -> Iterator[object]:
    """The dashboard served (``app_args`` after ``--``), a headless Chromium and a page opened at
    ``path`` (``/?model=...``), once its matrix is drawn: yields the page (its
    ``context.browser`` opens more)."""
    with streamlit_server(*app_args) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url + path)
        wait_for_matrix(page, timeout=timeout)
        yield page


CHARTS = "document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]')"
# a chart's cells: the paths of its first rectangle mark, one per cell in row-major order
CELL_PATHS = f"""(plot) => {{
    const c = {CHARTS}[plot];
    const g = c && c.querySelector('g.mark-rect.role-mark');
    return g ? [...g.querySelectorAll('path')] : [];
}}"""
CELL_AT = f"""(plot, row, col) => {{
    const paths = ({CELL_PATHS})(plot);
    return paths[row * Math.round(Math.sqrt(paths.length)) + col];
}}"""
CELLS_JS = f"(plot) => ({CELL_PATHS})(plot).length"


def wait_for_matrix(  # type: ignore[no-untyped-def]
    page, cells: int | None = None, plot: int = 0, timeout: float = 120_000
) -> None:
    """Wait until the ``plot``-th chart (0: the matrix) has drawn its cells (``cells`` of them)."""
    page.wait_for_function(
        f"([plot, n]) => {{ const k = ({CELLS_JS})(plot); return n === null ? k > 0 : k === n; }}",
        arg=[plot, cells],
        timeout=timeout,
    )


def chart_count(page) -> int:  # type: ignore[no-untyped-def]
    """How many matrix charts the page shows (the 1,000-class overview is the second)."""
    return int(page.evaluate(f"() => {CHARTS}.length"))


def selected_cells(page, plot: int = 0) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(true, pred) class indices of the cells the chart outlines as selected."""
    from dashboard.parts.matrix import SELECTED_STROKE

    found = page.evaluate(
        f"""([plot, stroke]) => ({CELL_PATHS})(plot)
            .filter(p => p.getAttribute('stroke') === stroke)
            .map(p => [p.__data__.datum.t, p.__data__.datum.p])""",
        [plot, SELECTED_STROKE],
    )
    return [(int(t), int(p)) for t, p in found]


CHART_READY_JS = f"""(plot) => !document.querySelector('[data-stale="true"]') &&
    ({CELLS_JS})(plot) > 0"""
CELL_CENTRE_JS = f"""([row, col, plot]) => {{
    {CHARTS}[plot].scrollIntoView({{block: 'center', behavior: 'instant'}});
    const box = ({CELL_AT})(plot, row, col).getBoundingClientRect();
    return [box.left + box.width / 2, box.top + box.height / 2];
}}"""
# The cell has stopped moving and the element under the pointer belongs to it (its rectangle or
# its count): Vega gives a click to the datum of the element under the pointer.
ON_CELL_JS = f"""([x, y, row, col, plot]) => new Promise(done => requestAnimationFrame(() =>
  requestAnimationFrame(() => {{  // two frames later: still in place, still under the pointer
    const cell = ({CELL_AT})(plot, row, col);
    if (!cell) return done(false);
    const box = cell.getBoundingClientRect();
    const still = Math.abs(box.left + box.width / 2 - x) < 1 &&
        Math.abs(box.top + box.height / 2 - y) < 1;
    const at = document.elementFromPoint(x, y);
    const got = at && at.__data__ && at.__data__.datum, want = cell.__data__.datum;
    done(still && !!got && got.t === want.t && got.p === want.p);
  }})))"""


def cell_centre(page, true: int, pred: int, plot: int = 0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Viewport pixel position of the centre of cell (true, pred) of the shown matrix (row and
    column positions in the ``plot``-th chart on the page: 1 is the 1,000-class overview when
    it is open).

    Waits until no element is stale (a rerun may replace the chart), then scrolls and measures
    in one call inside the page, so the chart cannot be swapped in between.
    """
    page.wait_for_function(CHART_READY_JS, arg=plot, timeout=120_000)
    return page.evaluate(CELL_CENTRE_JS, [true, pred, plot])


def point_at_cell(page, true: int, pred: int, plot: int = 0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Move the mouse onto a cell, as a person's click follows the pointer: measured again
    until the element under the pointer is that cell's (the page may still be moving, an
    expander opening above). Returns the mouse position."""
    for _ in range(50):
        x, y = cell_centre(page, true, pred, plot)
        page.mouse.move(x, y)
        if page.evaluate(ON_CELL_JS, [x, y, true, pred, plot]):
            return x, y
        page.wait_for_timeout(50)
    raise AssertionError(f"the pointer never rested on cell {(true, pred)} at {(x, y)}")


async def point_at_cell_async(page, true: int, pred: int, plot: int = 0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """:func:`point_at_cell` with Playwright's async API (many users driven from one process)."""
    for _ in range(50):
        await page.wait_for_function(CHART_READY_JS, arg=plot, timeout=120_000)
        x, y = await page.evaluate(CELL_CENTRE_JS, [true, pred, plot])
        await page.mouse.move(x, y)
        if await page.evaluate(ON_CELL_JS, [x, y, true, pred, plot]):
            return x, y
        await page.wait_for_timeout(50)
    raise AssertionError(f"the pointer never rested on cell {(true, pred)} at {(x, y)}")


def click_cell(page, true: int, pred: int, plot: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Click a matrix cell with the mouse, like a person: point at it, then press."""
    point_at_cell(page, true, pred, plot)
    page.mouse.down()
    page.mouse.up()


HEADING = re.compile(r"true (.+) → predicted (.+): ([\d,]+) images?")


def heading_pattern(true_name: str, pred_name: str) -> str:
    """A regular expression (Python and JavaScript alike) for a cell's heading; group 1: N."""
    return rf"true {re.escape(true_name)} → predicted {re.escape(pred_name)}: ([\d,]+) images?$"


def wait_for_gallery(page, true_name: str, pred_name: str, timeout: float = 120_000) -> int:  # type: ignore[no-untyped-def]
    """Wait until the cell heading and every card's three panels are shown; returns N."""
    title = heading_pattern(true_name, pred_name)
    found = page.wait_for_function(  # one read in the page: the heading may be re-rendered
        # headings only: reading the whole body's text on every frame is work for the page
        # being timed (a layout of everything, the matrix's SVG text included)
        "(re) => { const r = new RegExp(re, 'm');"
        " for (const h of document.querySelectorAll('h1, h2, h3, h4, h5, h6')) {"
        "  const m = h.innerText.match(r); if (m) return m[1]; }"
        " return false; }",
        arg=title,
        timeout=timeout,
    )
    n = int(str(found.json_value()).replace(",", ""))
    wait_for_cards(page, title, timeout)  # the heading is drawn a frame before the cards
    return n


def wait_for_cards(page, heading: str, timeout: float = 120_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until the gallery whose heading matches the regular expression ``heading`` (its
    ``data-heading``) shows every card's three panels, nothing stale."""
    page.wait_for_function(
        """(re) => {
            if (document.querySelector('[data-stale="true"]')) return false;
            const grid = document.querySelector('.cam-gallery');
            if (!grid || !new RegExp(re).test(grid.dataset.heading || '')) return false;
            const cards = Array.from(document.querySelectorAll('.cam-card'));
            return cards.length > 0 && cards.every(card => {
                const imgs = Array.from(card.querySelectorAll('figure img'));
                return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0);
            });
        }""",
        arg=heading,
        timeout=timeout,
    )


def gallery_cards(page) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """File name, panel captions and rendered image widths of each gallery card."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.cam-card')).map(card => ({
            path: card.querySelector('strong').innerText,
            captions: Array.from(card.querySelectorAll('figcaption')).map(c => c.innerText),
            loaded: Array.from(card.querySelectorAll('figure img'))
                .map(i => i.complete && i.naturalWidth > 0),
        }))"""
    )


def screenshot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_idle(page, timeout: float = 60_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until no rerun is in progress (nothing stale, no running indicator)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-stale=\"true\"]') &&"
        " !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout,
    )


def settled_box(page, locator, frames: int = 5, timeout: float = 30_000) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """``locator``'s viewport rectangle once it has been the same, and non-empty, for
    ``frames`` animation frames in a row (an expander opening, a grid measuring its columns
    and a rerun replacing elements all move it)."""
    locator.scroll_into_view_if_needed()
    handle = locator.element_handle()
    page.wait_for_function(
        """([el, frames]) => new Promise(resolve => {
            let last = '', same = 0;
            const step = () => {
                const r = el.getBoundingClientRect();
                const now = [r.x, r.y, r.width, r.height].join();
                same = r.width > 0 && r.height > 0 && now === last ? same + 1 : 0;
                last = now;
                if (same >= frames) resolve(true); else requestAnimationFrame(step);
            };
            requestAnimationFrame(step);
        })""",
        arg=[handle, frames],
        timeout=timeout,
    )
    box = locator.bounding_box()
    assert box is not None
    return box  # type: ignore[no-any-return]


ROW_PX = 35  # st.dataframe's header and row height


def select_grid_row(page, grid, row: int, first_cell: str, timeout: float = 60_000) -> None:  # type: ignore[no-untyped-def]
    """Select data row ``row`` (0-based) of a ``st.dataframe`` with row selection, like a person:
    wait until the page is idle and the grid shows that row (``first_cell`` is the text of its
    first cell in the grid's accessible table) at a settled position, click the row's
    selection box, and wait until the grid marks the row selected."""
    tr = grid.locator(f'tr[role="row"][aria-rowindex="{row + 2}"]')  # 1 is the header
    tr.locator('td[aria-colindex="1"]', has_text=first_cell).wait_for(state="attached")
    wait_idle(page, timeout)
    box = settled_box(page, grid.get_by_test_id("data-grid-canvas"))
    page.mouse.click(box["x"] + ROW_PX / 2, box["y"] + ROW_PX * (row + 1.5))
    page.wait_for_function(
        "(tr) => tr.getAttribute('aria-selected') === 'true'",
        arg=tr.element_handle(),
        timeout=timeout,
    )


def open_inspect(page, index: int = 0):  # type: ignore[no-untyped-def]
    """Open the large view of the ``index``-th image of the page; returns the dialog."""
    picker = page.get_by_test_id("stSelectbox").filter(has_text="Inspect an image").first
    option = page.get_by_role("option").nth(index)
    for attempt in range(3):  # a rerun that lands mid-click closes the list: open it again
        wait_idle(page)
        picker.click()
        try:
            option.wait_for(timeout=5_000)
            break
        except Exception:
            if attempt == 2:
                raise
    option.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def wait_for_idle_page(page, timeout: float = 120_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until a page has run to the end: no rerun, no spinner, nothing stale, for 1 s."""
    for _ in range(2):  # twice: a rerun can start right after the first idle moment
        page.wait_for_function(
            "() => !document.querySelector('[data-stale=\"true\"]') &&"
            " !document.querySelector('[data-testid=\"stStatusWidget\"]') &&"
            " !document.querySelector('[data-testid=\"stSpinner\"]')",
            timeout=timeout,
        )
        page.wait_for_timeout(1_000)


class Reruns:
    """The reruns on one page's websocket, decoded: those the browser asks for (a click, a
    fragment's timer: ``asked``, the fragment's id or "" for the whole page) and the page runs
    the server starts (``page_runs``: a run of the whole page, not of a fragment). A page run
    that no request of the browser asked for was started by the server itself (``st.rerun``)."""

    def __init__(self, page) -> None:  # type: ignore[no-untyped-def]
        self.asked: list[str] = []
        self.page_runs = 0
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:  # type: ignore[no-untyped-def]
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, frame: bytes | str) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        if isinstance(frame, bytes):
            msg = BackMsg.FromString(frame)
            if msg.WhichOneof("type") == "rerun_script":
                self.asked.append(msg.rerun_script.fragment_id)

    def _received(self, frame: bytes | str) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(frame, bytes):
            msg = ForwardMsg.FromString(frame)
            if msg.WhichOneof("type") == "new_session" and not msg.metadata.run.fragment_ids:
                self.page_runs += 1

    @property
    def page_requests(self) -> int:
        """How many times the browser asked for a run of the whole page (loads, widgets)."""
        return sum(1 for fragment in self.asked if not fragment)

    def assert_quiet(self, page, seconds: float = 3.0) -> None:  # type: ignore[no-untyped-def]
        """No page run the browser did not ask for so far, and, for ``seconds`` from now, no
        request at all (no poll's timer still running)."""
        before = len(self.asked)
        page.wait_for_timeout(seconds * 1_000)
        assert self.asked[before:] == [], self.asked[before:]
        assert self.page_runs <= self.page_requests, (self.page_runs, self.asked)
