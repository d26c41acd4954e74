"""**Test this pattern** on the Patterns page with AppTest: the card's verdict label from what is
stored, the test's panel with a stored verdict (its numbers, interval chart and example
images), the button writing the pattern into the URL, and a model that cannot be loaded."""

from __future__ import annotations

import re
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import load_config, load_model, open_dataset, result_patterns
from core.analysis.causal import Verdict, pattern_subject, result_verdict, stored_verdict
from tests.apptest import VIEWS, run
from tests.projects import expected, write_config

PATTERNS = str(VIEWS / "patterns.py")


@pytest.fixture(scope="module")
def tested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits project, its patterns and the first one's verdict, computed by core and
    stored beside the result (as a finished test leaves it)."""
    path = write_config(tmp_path_factory.mktemp("verify-apptest"))
    result = expected(path)
    found = result_patterns(result)
    config = load_config(path)
    model = load_model(config.model("digits-cnn"))
    data = open_dataset(config.dataset("digits-test"), model.spec.classes)
    verdict = result_verdict(result, model, data, pattern_subject(result, found[0]))
    return {"path": path, "result": result, "patterns": found, "verdict": verdict}


def _panel_html(at: AppTest) -> str:
    return "".join(h.value for h in at.html if "verdict-result" in h.value)


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_cards_carry_the_stored_verdict_and_a_test_button(
    tested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, result = tested["patterns"], tested["result"]
    at = run(PATTERNS, tested["path"], monkeypatch, flagged="0")
    assert not at.exception
    cards = [h.value for h in at.html if 'class="pattern-card"' in h.value]
    shown = min(12, len(found))
    assert len(cards) == shown
    verdict: Verdict = tested["verdict"]
    assert f'data-verdict="{verdict.verdict}"' in cards[0]
    for i, card in enumerate(cards[1:], start=1):  # not tested: an empty slot
        assert "data-verdict" not in card
        assert f'data-subject="{pattern_subject(result, found[i]).key}"' in card
    buttons = [b for b in at.button if b.label == "Test this pattern"]
    assert len(buttons) == shown
    assert not _panel_html(at)  # no test open


def test_the_open_test_shows_the_stored_verdict_at_once(
    tested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    verdict: Verdict = tested["verdict"]
    names = tested["result"].classes
    at = run(PATTERNS, tested["path"], monkeypatch, flagged="0", test="1")
    assert not at.exception
    assert f'data-verdict="{verdict.verdict}"' in _panel_html(at)
    text = _markdown(at)
    t, tc, e = verdict.transplant, verdict.transplant_control, verdict.erase
    assert f"{t.hits} of {t.n} = {t.rate:.2f} ({t.ci[0]:.2f}–{t.ci[1]:.2f})" in text
    assert f"control {tc.hits} of {tc.n}" in text
    assert f"{e.hits} of {e.n} = {e.rate:.2f}" in text
    assert f"p = {verdict.p_transplant:.2g}" in text and f"p = {verdict.p_erase:.2g}" in text
    assert f"flipped to *{names[verdict.subject.pred]}*" in text
    chart = at.get("plotly_chart")
    assert len(chart) == 1
    assert [b.label for b in at.button].count("Hide the test") == 1
    # the example images need the model: a moment later, on a later run of the page
    deadline = time.monotonic() + 120
    while not any("verdict-examples" in h.value for h in at.html):
        assert time.monotonic() < deadline, "the example images never came"
        time.sleep(0.5)
        at.run()
        assert not at.exception
    block = next(h.value for h in at.html if "verdict-examples" in h.value)
    images = re.findall(r'<img src="data:image/(?:webp|png|jpeg);base64,', block)
    transplants = min(4, len(verdict.target_rows))
    erasures = min(4, len(verdict.erase_rows))
    assert len(images) == 5 * transplants + 3 * erasures
    pred = names[verdict.subject.pred]
    flips = int((verdict.transplant_pred == verdict.subject.pred).sum())
    assert block.count(f"predicted {pred} (") >= min(flips, transplants)  # flips come first


def test_the_button_opens_a_test_in_the_url(
    tested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run(PATTERNS, tested["path"], monkeypatch, flagged="0")
    second = [b for b in at.button if b.label == "Test this pattern"][1]
    second.click().run()
    assert not at.exception
    assert at.query_params["test"] in ("2", ["2"])
    assert any(b.label == "Hide the test" for b in at.button)
    assert any("Causal test of pattern #2" in m.value for m in at.markdown)


def test_a_model_that_cannot_load_says_so_in_the_panel(
    tested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    found, result = tested["patterns"], tested["result"]
    rank = 3
    assert stored_verdict(result, pattern_subject(result, found[rank - 1])) is None
    failed: Future[Any] = Future()
    failed.set_exception(FileNotFoundError("missing.safetensors"))
    monkeypatch.setattr("dashboard.state.verdicts._model_loading", lambda *_: failed)
    at = run(PATTERNS, tested["path"], monkeypatch, flagged="0", test=str(rank))
    deadline = time.monotonic() + 60
    while not at.error:
        assert time.monotonic() < deadline, "no error shown"
        time.sleep(0.2)
        at.run()
    assert not at.exception
    message = at.error[0].value
    assert "could not be tested" in message and "missing.safetensors" in message
    assert "Traceback" not in message
    assert any(b.label == "Try again" for b in at.button)


def test_a_verdict_without_targets_says_why(
    tested: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that gets no image of another class right leaves the transplant arms empty: the
    panel says so beside the numbers (a verdict stored as such a test leaves it)."""
    from core.analysis.causal import Arm, _name, wilson
    from core.results import save_derived

    found, result = tested["patterns"], tested["result"]
    rank = 4
    subject = pattern_subject(result, found[rank - 1])
    n = len(subject.rows)
    empty, none = Arm(0, 0, wilson(0, 0)), np.zeros(0, np.int64)
    erase, control = Arm(n, n, wilson(n, n), 0), Arm(n, 0, wilson(0, n), 0)
    rows = np.asarray(subject.rows, np.int64)
    made = Verdict(
        subject, 200, 0, empty, empty, erase, control, 1.0, 1e-9,
        none, none, none, none, np.zeros((0, 2), np.int64),
        rows, np.full(n, subject.true), np.full(n, subject.pred), np.zeros((n, 2), np.int64),
    )  # fmt: skip
    save_derived(result, _name(subject, 200, 0), made.to_arrays())
    at = run(PATTERNS, tested["path"], monkeypatch, flagged="0", test=str(rank))
    assert not at.exception
    assert f'data-verdict="{made.verdict}"' in _panel_html(at)
    assert any("No correctly classified image" in w.value for w in at.warning)
    assert "0 of 0" in _markdown(at)
