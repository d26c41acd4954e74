"""A result folder made elsewhere (``--out DIR/``), moved, and opened against this server's
dataset: what matches opens, what differs is named."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np

from core import evaluate, open_dataset
from core.config import DatasetSpec


def test_a_moved_result_opens_and_names_what_differs(digits_model, digits_subset, tmp_path):  # type: ignore[no-untyped-def]
    root = digits_subset(per_class=3)
    dataset = open_dataset(DatasetSpec("digits", root))
    made = evaluate(digits_model, dataset, out=tmp_path / "gpu-box" / "result", num_workers=0)
    moved = tmp_path / "server" / "result"
    shutil.move(made.folder, moved)  # paths inside are relative: the folder survives a move
    gone = dataset.samples[0][0]
    relabelled = dataset.samples[5][0]
    extra = root / "9" / "extra.png"
    shutil.copy(root / dataset.samples[1][0], extra)
    lines = ["path,label"]
    for rel, label in dataset.samples[1:]:
        lines.append(f"{rel},{9 if rel == relabelled else label}")
    lines.append("9/extra.png,9")
    (tmp_path / "here.csv").write_text("\n".join(lines) + "\n")
    classes = tuple(str(d) for d in range(10))
    here = open_dataset(DatasetSpec("digits", root, csv=tmp_path / "here.csv", classes=classes))
    model = replace(digits_model, spec=replace(digits_model.spec, results=(moved,)))

    def no_model_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the server predicted although a result was given")

    result = evaluate(
        model, here, progress=None, cache_dir=tmp_path / "cache", engine=no_model_call
    )
    assert len(result.predictions) == 28  # 30 made elsewhere, one missing, one relabelled
    assert gone not in set(result.predictions["path"])
    assert relabelled not in set(result.predictions["path"])
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons[gone] == "not in dataset 'digits' on this server"
    assert reasons[relabelled] == f"labelled 9 here, {relabelled.split('/')[0]} in the result"
    assert any("missing here" in n and gone in n for n in result.notes)
    assert any("labelled differently here" in n for n in result.notes)
    assert any("1 image(s) of dataset 'digits' are not in the result" in n for n in result.notes)
    keep = ~np.isin(made.predictions["path"], [gone, relabelled])
    np.testing.assert_array_equal(result.probs(result.index), made.probs(made.index[keep]))
