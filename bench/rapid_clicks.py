"""Two clicks on two matrix cells in quick succession: does the second cell open?

    python bench/rapid_clicks.py [--gap-ms 60] [--pairs 5]

A person who clicks a cell and, while its gallery is still loading, clicks another expects the
second one. Each pair clicks cell A, waits ``--gap-ms`` (the first click's rerun is then still
running), clicks cell B and waits up to 15 s for B's gallery. Target: every pair opens B.
The second click points at B (``tests.browser.click_cell``); the matrix gives a click to the
cell under the pointer, so B must open even while A's rerun is running.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import (  # noqa: E402
    chromium,
    click_cell,
    new_page,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import expected, write_config  # noqa: E402

PAIRS = [((3, 3), (5, 5)), ((8, 8), (3, 9)), ((1, 1), (7, 7)), ((9, 9), (0, 0)), ((2, 2), (6, 6))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gap-ms", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=len(PAIRS))
    args = parser.parse_args()
    config = write_config(Path(tempfile.mkdtemp(prefix="bench-rapid-")))
    names = expected(config).classes
    opened = 0
    pairs = [PAIRS[i % len(PAIRS)] for i in range(args.pairs)]
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
        page.wait_for_timeout(3_000)  # the warm-up thread is done
        for first, second in pairs:
            click_cell(page, *first)
            page.wait_for_timeout(args.gap_ms)
            click_cell(page, *second)  # points until the hover is on B, as a person would
            try:
                wait_for_gallery(page, names[second[0]], names[second[1]], timeout=15_000)
                opened += 1
                print(f"{first} then {second}: the second cell opened")
            except Exception:
                print(f"{first} then {second}: LOST (URL {page.url})")
            page.wait_for_timeout(1_000)
    verdict = "PASS" if opened == len(pairs) else "FAIL"
    gap = f"{args.gap_ms} ms apart"
    print(f"\nsecond cell opened in {opened} of {len(pairs)} pairs ({gap}): {verdict}")


if __name__ == "__main__":
    main()
