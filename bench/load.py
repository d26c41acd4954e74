"""Many people on one server: M browser contexts clicking random cells for T seconds.

    python bench/load.py [--users 8] [--seconds 60] [--think 1 0]

Each user is its own Chromium context (own session and URL) driven concurrently with
Playwright's async API. A click counts as an error when its gallery does not show the
clicked cell's cards with the right image count within 30 s; the run's notes say what the page
showed instead. Each click is pointed first, as a person's click follows the pointer
(``tests.browser.point_at_cell``); the latency runs from the press. Target with 8 users on 2
cores: p95 ≤ 2 s and 0 errors.

``--think S [S ...]``: one run (a fresh server) per value. Before each click a user looks at
the page for a random 0 to 2·S seconds (mean S). The defaults print two rows: 1 s, faster
than people read a page of maps, and 0, a stress test in which all users click at the same
moment and again the moment their gallery is complete. All browsers run on the server's own
cores, so the latency includes their rendering work (in real use each person's browser runs
on their own machine). The page is checked every 50 ms (not every frame), so the measuring
itself takes little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import (  # noqa: E402
    CELLS_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    point_at_cell_async,
    streamlit_server,
)
from tests.projects import expected, write_config  # noqa: E402

LOADED_JS = f"""() => {{  // the first run is over: chart drawn, invitation to click shown, idle
    return ({CELLS_JS})(0) > 0 && !document.querySelector('[data-stale="true"]') &&
        !document.querySelector('[data-testid="stStatusWidget"]') &&
        document.body.textContent.includes('Click any cell of the confusion matrix');
}}"""
READY_JS = """(title) => {
    if (document.querySelector('[data-stale="true"]')) return false;
    const re = new RegExp(title);
    const heading = Array.from(document.querySelectorAll('h3')).map(h => h.textContent.match(re));
    const found = heading.find(m => m);
    if (!found) return false;
    // the cards are this cell's (the gallery names its heading), not the last cell's left over
    const grid = document.querySelector('.cam-gallery');
    if (!grid || !re.test(grid.dataset.heading || '')) return false;
    const imgs = Array.from(document.querySelectorAll('.cam-card img'));
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) && found[1];
}"""
# What a page shows when its gallery did not come: why the click counts as an error
SHOWN_JS = """() => ({
    cell: new URLSearchParams(location.search).get('cell'),
    headings: Array.from(document.querySelectorAll('h3'), h => h.textContent).join(' | '),
    cards_of: (document.querySelector('.cam-gallery') || {dataset: {}}).dataset.heading,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    running: !!document.querySelector('[data-testid="stStatusWidget"]'),
    errors: Array.from(document.querySelectorAll('[data-testid="stException"]'),
        e => e.textContent.slice(0, 200)),
    images: document.querySelectorAll('.cam-card img').length,
    unloaded: Array.from(document.querySelectorAll('.cam-card img'))
        .filter(i => !(i.complete && i.naturalWidth > 0)).length,
})"""


async def user(
    browser, url: str, cells, names, counts, start_line, seconds: float, think: float, rng
):  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": 1500, "height": 1100})
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function(LOADED_JS, polling=100, timeout=120_000)
    await start_line.wait()  # everyone starts clicking together, once all pages are loaded
    began = time.monotonic()
    until = began + seconds
    latencies, errors, current = [], 0, None
    slow = []  # (seconds after the start line, latency, cell) of clicks over 2 s
    failed = []  # (seconds after the start line, cell, what the page showed) of the errors
    while time.monotonic() < until:
        if think:  # looking at the page before clicking (also staggers the first clicks)
            await asyncio.sleep(rng.uniform(0, 2 * think))
        cell = rng.choice([c for c in cells if c != current])
        true, pred = cell
        title = rf"true {re.escape(names[true])} → predicted {re.escape(names[pred])}: (\d+) image"
        try:  # as a person does: the click follows the cell's tooltip (see point_at_cell)
            await point_at_cell_async(page, true, pred)
        except Exception:  # the hover never reached the cell: the page is not usable
            errors += 1
            failed.append((time.monotonic() - began, cell, "the pointer never rested on it"))
            continue
        start = time.perf_counter()  # from the press: pointing is the person's time
        await page.mouse.down()
        await page.mouse.up()
        try:
            shown = await page.wait_for_function(READY_JS, arg=title, polling=50, timeout=30_000)
            latencies.append(time.perf_counter() - start)
            if latencies[-1] > 2.0:
                slow.append((time.monotonic() - began - latencies[-1], latencies[-1], cell))
            errors += int(await shown.json_value()) != counts[cell]
        except Exception:  # a timeout is an error of the server under load
            errors += 1
            failed.append((time.monotonic() - began - 30, cell, await page.evaluate(SHOWN_JS)))
        current = cell
    await context.close()
    return latencies, errors, slow, failed


async def run(users: int, seconds: float, think: float) -> list[str]:
    """One load run; returns its table row and notes."""
    from playwright.async_api import async_playwright

    config = write_config(Path(tempfile.mkdtemp(prefix="bench-load-")))
    result = expected(config)
    counts = result.predictions.groupby(["true", "pred"]).size().to_dict()
    cells = list(counts)
    with streamlit_server("--config", str(config)) as url:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            start_line = asyncio.Barrier(users)
            results = await asyncio.gather(
                *(
                    user(
                        browser,
                        url,
                        cells,
                        result.classes,
                        counts,
                        start_line,
                        seconds,
                        think,
                        random.Random(k),
                    )
                    for k in range(users)
                )
            )
            await browser.close()
    latencies = [t for lat, *_ in results for t in lat]
    errors = sum(e for _, e, *_ in results)
    slow = sorted(s for _, _, user_slow, _ in results for s in user_slow)
    failed = sorted((f for *_, user_failed in results for f in user_failed), key=lambda f: f[0])
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    firsts = [lat[0] for lat, *_ in results if lat]
    verdict = "PASS" if p95 <= 2.0 and errors == 0 else "FAIL"
    row = [
        users,
        f"{think:g}",
        len(latencies),
        f"{p50:.3f}",
        f"{p95:.3f}",
        errors,
        f"{p95 / 2:.2f}× {verdict}",
    ]
    notes = [
        f"think {think:g} s: each user's first click p50 {percentile(firsts, 0.5):.3f} s, "
        f"max {max(firsts, default=float('nan')):.3f} s; {len(slow)} clicks over 2 s"
        + (" (s after start: latency): " if slow else "")
        + ", ".join(f"{at:.1f}: {lat:.2f}" for at, lat, _ in slow[:12])
        + (" …" if len(slow) > 12 else ""),
        *(f"error {at:.1f} s after start, cell {cell}: {shown}" for at, cell, shown in failed),
        f"load average at the end: {os.getloadavg()}",
    ]
    return ["| " + " | ".join(str(v) for v in row) + " |", *notes]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (nan for no values)."""
    if not values:
        return float("nan")
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--think", type=float, nargs="+", default=[1.0, 0.0], help="mean seconds between clicks"
    )
    args = parser.parse_args()
    rows, notes = [], []
    for think in args.think:
        row, *more = asyncio.run(run(args.users, args.seconds, think))
        rows.append(row)
        notes += more
    print(
        f"\n{args.users} users clicking random cells for {args.seconds:.0f} s against one server\n"
    )
    print("| users | mean think s | clicks | p50 s | p95 s | errors | p95 ÷ 2 s target |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
