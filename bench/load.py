"""Many people on one server: M browser contexts clicking random cells for T seconds.

    python bench/load.py [--users 8] [--seconds 60]

Each user is its own Chromium context (own session and URL) driven concurrently with
Playwright's async API. A click counts as an error when its gallery does not show the
clicked cell with the right image count within 30 s. Target with 8 users on 2 cores:
p95 ≤ 2 s and 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402
from tests.projects import expected, write_config  # noqa: E402

CENTRE_JS = """([row, col]) => {
    const g = document.querySelector('.js-plotly-plot');
    const box = g.getBoundingClientRect();
    const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis;
    return [box.left + xa._offset + xa.l2p(col), box.top + ya._offset + ya.l2p(row)];
}"""
READY_JS = """() => !document.querySelector('[data-stale="true"]') &&
    Array.from(document.querySelectorAll('.cam-card img'))
        .every(i => i.complete && i.naturalWidth > 0)"""


async def user(browser, url: str, cells, names, counts, start_line, seconds: float, rng):  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": 1500, "height": 1100})
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function(
        "() => { const g = document.querySelector('.js-plotly-plot'); return g && g._fullLayout; }",
        timeout=120_000,
    )
    await start_line.wait()  # everyone starts clicking together, once all pages are loaded
    until = time.monotonic() + seconds
    latencies, errors, current = [], 0, None
    while time.monotonic() < until:
        cell = rng.choice([c for c in cells if c != current])
        true, pred = cell
        title = rf"true {re.escape(names[true])} → predicted {re.escape(names[pred])}"
        heading = page.get_by_text(re.compile(title + r": (\d+) images?$"))
        x, y = await page.evaluate(CENTRE_JS, [true, pred])
        start = time.perf_counter()
        await page.mouse.click(x, y)
        try:
            await heading.first.wait_for(timeout=30_000)
            await page.wait_for_function(READY_JS, timeout=30_000)
            shown = int(re.search(r"(\d+) images?$", await heading.first.inner_text()).group(1))  # type: ignore[union-attr]
            latencies.append(time.perf_counter() - start)
            errors += shown != counts[cell]
        except Exception:  # a timeout is an error of the server under load
            errors += 1
        current = cell
    await context.close()
    return latencies, errors


async def run(users: int, seconds: float) -> None:
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
                        random.Random(k),
                    )
                    for k in range(users)
                )
            )
            await browser.close()
    latencies = [t for lat, _ in results for t in lat]
    errors = sum(e for _, e in results)
    ordered = sorted(latencies)
    p95 = (
        ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        if ordered
        else float("nan")
    )
    p50 = statistics.median(latencies) if latencies else float("nan")
    print(f"\n{users} users clicking random cells for {seconds:.0f} s against one server\n")
    print("| users | clicks | p50 s | p95 s | errors | p95 ÷ 2 s target |")
    print("|---|---|---|---|---|---|")
    verdict = "PASS" if p95 <= 2.0 and errors == 0 else "FAIL"
    row = [users, len(latencies), f"{p50:.3f}", f"{p95:.3f}", errors, f"{p95 / 2:.2f}× {verdict}"]
    print("| " + " | ".join(str(v) for v in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    asyncio.run(run(args.users, args.seconds))


if __name__ == "__main__":
    main()
