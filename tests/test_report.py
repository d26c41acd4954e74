"""The session report: one self-contained HTML file that fetches nothing, with every finding's
images and their stored predicted- and true-class maps embedded as WebP, user text escaped,
the patterns, corrections and tagged images; and the Markdown form with its images/ folder."""

from __future__ import annotations

import base64
import csv
import io
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.cli.common import results as evaluated
from core.config import load_config
from core.corrections import CorrectionsStore, manifest_rows
from core.data.datasets import dataset_key, open_dataset
from core.explain.normalise import display_maps
from core.explain.overlay import overlay
from core.findings import FindingsStore
from core.notes import NotesStore

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sample_models"))
from plant_labels import plant  # noqa: E402

TRICKY = '<script>alert("title")</script> & <img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A planted digits project after a session: findings, tags, notes and corrections."""
    folder = tmp_path_factory.mktemp("report")
    config_path = plant(folder, "digits-test", count=8)
    config = load_config(config_path)
    result = evaluated(config, None, None)
    with (folder / "planted.csv").open(encoding="utf-8") as handle:
        planted = {r["path"]: r["label"] for r in csv.DictReader(handle)}
    key = dataset_key(config.dataset())
    notes = NotesStore(config.notes_db)
    findings = FindingsStore(notes)
    paths = result.predictions["path"].astype(str).tolist()
    errors = [p for p, t, q in zip(paths, result.true, result.pred, strict=True) if t != q]
    first = findings.create(
        key, "cell", TRICKY, "ann", model="digits-cnn", text="line one\n<b>not bold</b>",
        owner="bob", ticket="javascript:alert(1)", link="analysis?cell=3,8",
        paths=errors[:12], context={"cell": "3 → 8"},
    )  # fmt: skip
    findings.update(first.id, "bob", status="confirmed")
    second = findings.create(
        key, "pattern", "Diagonal pattern", "carl", ticket="https://tracker.example/ML-1",
        paths=[*paths[:5], "missing/x.png"], total=40,
    )  # fmt: skip
    findings.create(key, "image", "Other model's", "ann", model="another-model", paths=paths[:1])
    for path in sorted(planted)[:3]:
        notes.add_tag(key, path, "mislabelled?", "dora")
        notes.add_note(key, path, "dora", "the <i>stroke</i> & the label disagree")
    CorrectionsStore(notes).add(key, [(p, planted[p], "0") for p in sorted(planted)[:2]], "eve")
    return config_path, result, [first.id, second.id], sorted(planted)[:3]


@pytest.fixture(scope="module")
def html(session, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    config_path = session[0]
    out = tmp_path_factory.mktemp("out") / "report.html"
    argv = ["report", "--config", str(config_path), "--out", str(out)]
    assert main([*argv, "--dashboard-url", "http://dash.example:8501"]) == 0
    return out.read_text(encoding="utf-8")


def _pictures(html: str, section: str) -> list[tuple[str, Image.Image]]:
    """(alt, decoded picture) of every <img> inside the element with id ``section``."""
    start = html.index(f'id="{section}"')
    end = html.index("</article>", start) if "<article" in html[start - 40 : start] else None
    page = Page()
    page.feed(html[start:end])
    found = []
    for tag, attrs in page.tags:
        if tag == "img":
            head, data = attrs["src"].split(",", 1)
            assert head == "data:image/webp;base64"
            picture = Image.open(io.BytesIO(base64.b64decode(data)))
            assert picture.format == "WEBP"
            found.append((attrs["alt"], picture.convert("RGB")))
    return found


def test_the_report_fetches_nothing(html: str) -> None:
    page = Page()
    page.feed(html)
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert "object" not in tags and "embed" not in tags
    for tag, attrs in page.tags:
        assert not attrs.get("src") or attrs["src"].startswith("data:image/webp;base64,"), tag
        if "href" in attrs:
            assert tag == "a" and not attrs["href"].lower().startswith("javascript:")
        assert not any(name.startswith("on") for name in attrs)  # no event handlers
        assert "style" not in attrs or "url(" not in attrs["style"]
    css = "".join(page.styles)
    assert "@import" not in css and "url(" not in css and "http" not in css
    policy = next(a["content"] for t, a in page.tags if a.get("http-equiv"))
    assert "default-src 'none'" in policy and "img-src data:" in policy
    assert not re.search(r"""(src|srcset|poster|data)\s*=\s*["']?\s*https?:""", html, re.I)


def test_user_text_is_escaped(html: str) -> None:
    assert TRICKY not in html and "<b>not bold</b>" not in html and "<i>stroke</i>" not in html
    assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert 'href="javascript' not in html and "javascript:alert(1)" in html  # shown as text
    assert 'href="https://tracker.example/ML-1"' in html  # an http(s) ticket is a link
    assert 'href="http://dash.example:8501/analysis?cell=3,8"' in html  # the deep link


def test_every_finding_has_its_images_and_their_stored_maps(session, html: str) -> None:
    config_path, result, (first, second), _ = session
    config = load_config(config_path)
    dataset = open_dataset(config.dataset(), result.classes)
    finding = FindingsStore(NotesStore(config.notes_db)).get(first)
    pictures = _pictures(html, f"finding-{first}")
    assert len(pictures) == 3 * len(finding.paths) and len(finding.paths) >= 8
    size = tuple(result.meta["input_size"])
    for i, path in enumerate(finding.paths):
        (alt0, image), (alt1, pred_map), (alt2, true_map) = pictures[3 * i : 3 * i + 3]
        assert path in alt0 and path in alt1 and path in alt2
        assert alt1.startswith("predicted") and alt2.startswith("true")
        original = dataset.image(path, 3)
        np.testing.assert_array_equal(np.asarray(image), np.asarray(original))  # lossless
        (row,) = manifest_rows(result, [path])
        maps = display_maps(result.maps([row]), size)[0]
        for panel, cam in ((pred_map, maps[0]), (true_map, maps[1])):
            expected = np.asarray(overlay(original, cam, 0.5))
            np.testing.assert_array_equal(np.asarray(panel), expected)
    held = _pictures(html, f"finding-{second}")
    assert len(held) == 3 * 5  # the image the evaluation does not hold is named, not drawn
    start = html.index(f'id="finding-{second}"')
    article = html[start : html.index("</article>", start)]
    assert "missing/x.png" in article and "not in this evaluation" in article
    assert "40 image(s), 6 shown here" in article
    assert "Other model&#39;s" not in html and "1 more finding(s)" in html


def test_the_report_holds_the_rest_of_the_session(session, html: str) -> None:
    _, result, _, tagged = session
    assert "owner: bob" in html and "confirmed" in html and "edited 1 time(s)" in html
    assert f"{np.mean(result.true == result.pred):.1%}" in html
    assert "corrected the labels of 2 images" in html
    assert html.count('class="matrix"') == 1
    assert 'id="pattern-1"' in html and "mean map" in html
    tags = html[html.index('id="tagged"') :]
    for path in tagged:
        assert path in tags
    assert tags.count("mislabelled?") >= 2 * len(tagged) and "dora" in tags
    assert "corrected to <b>0</b>" in html
    assert len(_pictures(html, "tagged")) == len(tagged)


def test_markdown_report_writes_its_images(session, tmp_path: Path) -> None:
    config_path, _, (first, _), _ = session
    out = tmp_path / "wiki" / "report.md"
    assert main(["report", "--config", str(config_path), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", text)
    assert len(links) >= 3 * (8 + 5) and all((out.parent / link).is_file() for link in links)
    assert all(Image.open(out.parent / link).format == "WEBP" for link in links)
    assert f"### #{first} " in text and "<script>" not in text and "&lt;script&gt;" in text
    assert "](javascript" not in text and "<javascript" not in text  # text, never a link


def test_a_bad_output_folder_is_one_line(session, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config_path = session[0]
    assert main(["report", "--config", str(config_path), "--out", str(blocker / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: cannot write") and "Traceback" not in err


def test_a_large_class_set_lists_the_most_confused_pairs(tmp_path: Path) -> None:
    """Past 30 classes the matrix gives way to the most confused pairs and lowest recalls;
    a report made for a page (``report_html``) with nothing stored computes nothing."""
    from core.data.datasets import ImageDataset
    from core.report import ReportInputs, report_html
    from core.results import BatchScores, ResultWriter

    classes = [f"k{i:02d}" for i in range(40)]
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 40
    pred = np.where(rng.random(400) < 0.7, labels, rng.integers(0, 40, 400)).astype(np.int32)
    manifest = [(f"{classes[c]}/{i}.png", int(c)) for i, c in enumerate(labels)]
    probs = np.full((400, 40), 1 / 40, np.float16)
    ones = np.ones(400, np.float32)
    with ResultWriter(tmp_path / "result", manifest, classes, "test") as writer:
        writer.write(BatchScores(np.arange(400), pred, ones, ones, ones, pred, ones, probs))
        result = writer.finish()
    dataset = ImageDataset("d", tmp_path, manifest, classes)
    notes = NotesStore(tmp_path / "notes.sqlite", read_only=True)
    inputs = ReportInputs(result, dataset, notes, "key", "m", "d", compute=False, slices=[])
    html = report_html(inputs)
    assert 'class="matrix"' not in html and "Most confused pairs" in html
    confused = html[html.index("Most confused pairs") : html.index("Lowest recall")]
    assert confused.count("<tr>") == 1 + 20
    assert "stored no Grad-CAM maps" in html and "No image of this dataset has a tag" in html
    assert not (tmp_path / "notes.sqlite").exists()  # a read-only store creates nothing
