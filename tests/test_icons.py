"""Icons and badges render in the fonts the set-up installs (DejaVu): the dashboard writes words
and Streamlit's Material icons, never emoji or dingbats, which draw as empty boxes there."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from dashboard.parts.notes import badge_text

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"


def test_no_dashboard_source_writes_a_pictograph() -> None:
    found = [
        f"{path.relative_to(DASHBOARD)}:{number}: {char!r} ({unicodedata.name(char, '?')})"
        for path in sorted(DASHBOARD.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for char in line
        # "So" (symbol, other) is where emoji, dingbats and pictographs live; arrows (→) are
        # "Sm" and typographic marks (…, ·, “) are punctuation, all of which DejaVu draws, as
        # it draws the Geometric Shapes block (▲ ▼ mark slices and significant changes)
        if (unicodedata.category(char) == "So" and not 0x25A0 <= ord(char) <= 0x25FF)
        or ord(char) >= 0x1F000
    ]
    assert not found, found


def test_badge_is_words() -> None:
    from core.notes import PathSummary

    summary = PathSummary(tags=frozenset({"spurious cue", "label error"}), n_notes=2)
    assert badge_text(summary) == "tags: label error, spurious cue · 2 notes"
    assert badge_text(PathSummary(tags=frozenset(), n_notes=1)) == "1 note"
    assert badge_text(None) == ""
