"""Click → first gallery page, measured in headless Chromium against a real server.

    python bench/click.py [--rounds 4] [--fresh 5]

Three kinds of click on every non-empty cell of the sample:

* cold: Grad-CAM++ (not the default method, so nothing was computed ahead): the page's maps
  are computed and its panels encoded on the click;
* first visit in the default view: page 1 was computed by the server's warm-up thread when
  the predictions were ready;
* revisit: the same cells again (``--rounds`` - 1 more rounds).

``--fresh N`` times instead N fresh servers (stored results, model not loaded; the first one
opens them for the first time and finds their patterns), each with a newly started Chromium:
its first visitor clicks a cell the moment the matrix is drawn, at once (no pointing first),
as a person sees it: from the click to the complete gallery (target ≤ 1 s); off-diagonal on
the even servers, diagonal (the larger cells) on the odd ones; and, as the floor, an
off-diagonal cell 5 s later (the model loaded).

The mouse is first moved onto the cell until it rests on it (a person's click follows the
pointer; see ``tests.browser.point_at_cell``), then pressed: the time runs from
that press to the moment the cell's heading and every image of its first page are loaded.
Targets on the sample on a 2-core CPU: p50 ≤ 1 s for a cold click, p50 ≤ 0.3 s for a first
visit with stored maps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import cell_rows  # noqa: E402
from core.analysis.gallery import page_rows, sort_rows  # noqa: E402
from tests.browser import (  # noqa: E402
    cell_centre,
    chromium,
    heading_pattern,
    new_page,
    point_at_cell,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import expected, write_config  # noqa: E402

# Watches for the click in the page itself: the mouseup's time stamp, and the first animation
# frame in which nothing is stale, the cell's heading is shown and the cards are exactly its
# first page, in order, every image loaded. Both times come from the page's clock, so
# Playwright's round trips (to press the button, and to poll for the result) are not counted.
WATCH = """([title, paths]) => {
    const watch = window.__click = {up: null, done: null};
    addEventListener('mouseup', e => { watch.up = e.timeStamp; }, {capture: true, once: true});
    const heading = new RegExp(title, 'm');
    const complete = () => {
        if (document.querySelector('[data-stale="true"]')) return false;
        const titles = Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'));
        if (!titles.some(h => heading.test(h.innerText))) return false;
        const cards = Array.from(document.querySelectorAll('.cam-card'));
        const shown = cards.map(card => card.querySelector('strong').innerText);
        return shown.join('\\n') === paths.join('\\n') && cards.every(card => {
            const imgs = Array.from(card.querySelectorAll('figure img'));
            return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0);
        });
    };
    const frame = () => {
        if (watch.up !== null && complete()) watch.done = performance.now();
        else requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
}"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed_click(page, result, true: int, pred: int, point: bool = True) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Press a cell, wait for its complete first page: (in page, wall) seconds. ``point``:
    point at it first, as a person does before a click; else click its centre at once (the
    moment the matrix is drawn)."""
    names, preds = result.classes, result.predictions
    if point:
        point_at_cell(page, true, pred)  # a person points, sees the tooltip, clicks
    else:
        page.mouse.move(*cell_centre(page, true, pred))
    first_page = page_rows(sort_rows(cell_rows(preds, true, pred), "confidence", False), 1, 24)
    page.evaluate(WATCH, [heading_pattern(names[true], names[pred]), list(first_page["path"])])
    start = time.perf_counter()
    page.mouse.down()
    page.mouse.up()
    wait_for_gallery(page, names[true], names[pred])
    wall = time.perf_counter() - start
    page.wait_for_function("() => window.__click.done !== null")
    up, done = page.evaluate("() => [window.__click.up, window.__click.done]")
    return (done - up) / 1000, wall


def fresh(config: Path, result, servers: int) -> None:  # type: ignore[no-untyped-def]
    """A click the moment a fresh server's first page shows its matrix, then one 5 s later."""
    counts = result.predictions.groupby(["true", "pred"]).size()
    errors = [(int(t), int(p)) for (t, p) in counts.index if t != p]
    diagonal = [(int(t), int(p)) for (t, p) in counts.index if t == p]
    first, first_diagonal = "at once, as the matrix shows", "at once, a diagonal cell"
    later = "5 s later (model loaded)"
    in_page: dict[str, list[float]] = {first: [], first_diagonal: [], later: []}
    wall: dict[str, list[float]] = {first: [], first_diagonal: [], later: []}
    for server in range(servers):  # the first server opens the result's first time
        with chromium() as browser, streamlit_server("--config", str(config)) as url:
            page = new_page(browser)
            page.goto(url)
            wait_for_matrix(page)
            kind, cells = (first, errors) if server % 2 == 0 else (first_diagonal, diagonal)
            seconds, waited = timed_click(page, result, *cells[server % len(cells)], point=False)
            in_page[kind].append(seconds)
            wall[kind].append(waited)
            page.wait_for_timeout(5_000)
            seconds, waited = timed_click(page, result, *errors[(server + 1) % len(errors)])
            in_page[later].append(seconds)
            wall[later].append(waited)
            page.context.close()
    print(f"\nfirst click on a fresh server ({servers} servers and browsers, the digits model)\n")
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| click | n | wall p50 s | all, wall s | all, in page s | target |")
    print("|---|---|---|---|---|---|")
    for kind, target in ((first, 1.0), (first_diagonal, 1.0), (later, None)):
        if not wall[kind]:
            continue
        p50 = statistics.median(wall[kind])
        met = target is not None and max(wall[kind]) <= target
        verdict = f"≤ {target} s, every run: {'PASS' if met else 'FAIL'}" if target else "-"
        runs = ", ".join(f"{v:.2f}" for v in wall[kind])
        pages = ", ".join(f"{v:.2f}" for v in in_page[kind])
        print(f"| {kind} | {len(wall[kind])} | {p50:.3f} | {runs} | {pages} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--fresh", type=int, default=0, help="time N fresh servers' first click")
    args = parser.parse_args()
    config = write_config(Path(tempfile.mkdtemp(prefix="bench-click-")))
    if args.fresh:
        fresh(config, expected(config), args.fresh)
        return
    result = expected(config)
    counts = result.predictions.groupby(["true", "pred"]).size()
    cells = [(int(t), int(p)) for (t, p) in counts.index]
    cold, first, again = "cold (Grad-CAM++)", "first visit (warmed)", "revisit"
    timings: dict[str, list[float]] = {cold: [], first: [], again: []}
    in_page: dict[str, list[float]] = {cold: [], first: [], again: []}
    plan = [(cold, "?method=Grad-CAM%2B%2B")] + [(first, "")] + [(again, "")] * (args.rounds - 1)
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        query = None
        for kind, params in plan:
            if params != query:
                page.goto(url + "/" + params)
                wait_for_matrix(page)
                page.wait_for_timeout(3_000)  # the warm-up thread is done
                query = params
            for true, pred in cells:  # consecutive cells differ: a second click would deselect
                seconds, waited = timed_click(page, result, true, pred)
                in_page[kind].append(seconds)
                timings[kind].append(waited)
    print(f"\nclick → first page on the sample ({len(cells)} non-empty cells, page size 24)\n")
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("in page: from the mouseup to the first frame with the page complete (the page's clock)")
    print("wall: from Playwright's press to its poll seeing the page complete (adds round trips)\n")
    print("| clicks | n | in page p50 s | p95 s | max s | wall p50 s | p95 s | target p50 |")
    print("|---|---|---|---|---|---|---|---|")
    targets = {cold: 1.0, first: 0.3, again: 0.3}
    for kind, values in in_page.items():
        if values:
            p50, target, wall = statistics.median(values), targets[kind], timings[kind]
            verdict = "PASS" if p50 <= target else "FAIL"
            print(
                f"| {kind} | {len(values)} | {p50:.3f} | {percentile(values, 0.95):.3f} | "
                f"{max(values):.3f} | {statistics.median(wall):.3f} | "
                f"{percentile(wall, 0.95):.3f} | ≤ {target} s {verdict} |"
            )


if __name__ == "__main__":
    main()
