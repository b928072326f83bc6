"""bench.diagnose: the probes find a planted signal and not an absent one; expression programs read back;
the whole diagnosis runs on tiny data and writes every section."""

from __future__ import annotations

import numpy as np

from bench.experiments.diagnose import linear_probe, patch_labels, sentence_program
from risclip.config import DataConfig, ModelConfig
from risclip.engine import build_dataset


def test_linear_probe_finds_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 32))
    planted = np.where(x[:, 7] + 0.5 * x[:, 3] > 0, "left", "right")
    noise = rng.choice(["a", "b", "c"], size=600)
    found = linear_probe(x[:400], planted[:400], x[400:], planted[400:])
    assert found["accuracy"] > 90 and found["majority"] < 65
    none = linear_probe(x[:400], noise[:400], x[400:], noise[400:])
    assert none["accuracy"] < none["majority"] + 15  # nothing to find: about chance


def test_expression_programs_read_back_from_the_closed_vocabulary():
    assert sentence_program("the small red circle", "attribute") == {
        "kind": "attribute", "target shape": "circle", "target colour": "red", "target size": "small",
        "position word": "none", "relation word": "none", "anchor shape": "none"}
    assert sentence_program("the square on the left", "position")["position word"] == "leftmost"
    assert sentence_program("the bottom triangle", "position")["position word"] == "bottommost"
    rel = sentence_program("the red square to the left of the large circle", "relation")
    assert (rel["relation word"], rel["target shape"], rel["anchor shape"], rel["target size"]) == (
        "to the left of", "square", "circle", "none")
    assert sentence_program("the square over the green triangle", "relation")["relation word"] == "above"


def test_patch_labels_name_the_object_under_each_patch(synthref_root):
    ds = build_dataset(DataConfig(data_root=str(synthref_root)), ModelConfig.tiny(image_size=64), "train", train=False)
    ref, _ = ds.samples[0]
    labels = patch_labels(ds, ref["image_id"], 8)
    assert set(labels) == {"shape", "colour", "size", "striped", "x third", "y third"}
    shapes = set(labels["shape"].tolist())
    assert "background" in shapes and shapes - {"background"}  # objects and background both present
    on = labels["shape"] != "background"
    assert (labels["colour"][on] != "background").all() and (labels["colour"][~on] == "background").all()


def test_quick_diagnosis_writes_every_section(tmp_path):
    from bench.experiments import diagnose

    out = tmp_path / "diag.md"
    assert diagnose.main(["--quick", "--data-root", str(tmp_path / "data"), "--tracking-uri",
                          f"sqlite:///{tmp_path / 'none.db'}", "--out", str(out), "--no-progress"]) == 0
    md = out.read_text()
    for section in ("## 1. What the patch embeddings hold", "## 2. What the sentence embedding holds",
                    "## 3. Fit against generalisation", "## 4. The patch map on the referent",
                    "## 5. Zero-shot dense grounding", "## 6. The proxy's pre-training corpus"):
        assert section in md
    assert "python -m bench.diagnose --quick" in md and "| shape |" in md and "| target colour |" in md
    assert "| 1 | 1 |" in md and "| 2 | 1 |" in md  # the map measured after each epoch of both rungs
    # measure -> JSON -> render: the JSON alone renders the same report, with no measuring
    again = diagnose.main(["--render", str(out.with_suffix(".json")), "--out", str(tmp_path / "again.md")])
    assert again == 0 and (tmp_path / "again.md").read_text() == md
