"""python -m risclip.predict on a trained tiny variant, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from risclip import predict as P
from risclip.config import DataConfig, ModelConfig, TrainConfig
from risclip.engine import load_checkpoint, run_variant
from risclip.model import RISCLIP


@pytest.fixture(scope="module")
def trained(synthref_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("predict")
    data = DataConfig(data_root=str(synthref_root), max_train_samples=16, max_eval_samples=8)
    train = TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8, eval_batch_size=8, progress=False)
    result = run_variant(ModelConfig.tiny(components="adapters,decoder"), train, data, work / "run", evaluate_val=False)
    image = next((synthref_root / "images").glob("*.png"))
    return result.checkpoint, image, work


def test_predict_writes_masks_at_the_original_size(trained, capsys):
    ckpt, image, work = trained
    h, w = Image.open(image).size[::-1]
    out, ov = work / "mask.png", work / "overlay.png"
    assert P.main(["--checkpoint", ckpt, "--image", str(image), "--text", "the red square", "--out", str(out),
                   "--overlay", str(ov)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(ov).size == (w, h)
    assert "mask.png" in capsys.readouterr().out


def test_several_texts_give_the_masks_of_single_texts(trained):
    ckpt, image, work = trained
    texts = ["the red square", "the small blue circle on the left", "the triangle"]
    assert P.main(["--checkpoint", ckpt, "--image", str(image), *sum((["--text", t] for t in texts), []),
                   "--out", str(work / "many.png")]) == 0
    for i, t in enumerate(texts):
        assert P.main(["--checkpoint", ckpt, "--image", str(image), "--text", t, "--out", str(work / "one.png")]) == 0
        many = np.asarray(Image.open(work / f"many-{i + 1}.png"))
        assert np.array_equal(many, np.asarray(Image.open(work / "one.png")))


@pytest.mark.parametrize("components", ["adapters", "adapters,cfe"])
def test_one_image_pass_equals_a_repeated_batch(components):
    torch.manual_seed(0)
    model = RISCLIP.from_config(ModelConfig.tiny(components=components)).eval()
    with torch.no_grad():  # move the components off their identity start, so that they matter
        for name, p in model.named_parameters():
            if not name.startswith("clip."):
                p.add_(0.05 * torch.randn_like(p))
    image = torch.randn(1, 3, 96, 96)
    tokens = P.tokenize(["a red square", "the blue circle on the left"], 24)
    with torch.no_grad():
        shared = model(image, tokens)
        repeated = model(image.expand(2, -1, -1, -1), tokens)
    torch.testing.assert_close(shared.patch_logits, repeated.patch_logits)
    torch.testing.assert_close(shared.mask_logits, repeated.mask_logits)


def test_errors_are_one_line(trained, tmp_path, capsys):
    ckpt, image, _ = trained
    out = str(tmp_path / "m.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = [
        (["--image", str(tmp_path / "missing.png")], "image not found"),
        (["--image", str(bad)], "cannot read the image"),
        (["--image", str(image), "--components", "adapters,cfe"], "holds variant value+adapters+decoder"),
        (["--image", str(image), "--clip-model", "ViT-B-16"], "trained on backbone RIS-Tiny"),
        (["--image", str(image), "--text", "the red square " * 20], "at most 24"),
    ]
    for args, message in cases:
        argv = ["--checkpoint", ckpt, "--out", out, *args]
        if "--text" not in args:
            argv += ["--text", "the red square"]
        assert P.main(argv) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert P.main(["--checkpoint", str(tmp_path / "none.pt"), "--image", str(image), "--text", "x", "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_run_id_is_found_in_the_local_store(trained, tmp_path, capsys):
    ckpt, image, _ = trained
    from bench.spine import serving
    from bench.spine.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "predict")
    run_id = tracker.start("v", {"checkpoint": ckpt})
    args = ["--tracking-uri", uri, "--image", str(image), "--text", "the red square", "--out", str(tmp_path / "m.png")]
    assert serving.main(["--run", run_id, *args]) == 0
    assert serving.main(["--run", "nope", *args]) == 2
    assert "no MLflow run nope" in capsys.readouterr().err
    # the library reads no local store itself (it never imports MLflow): it names the command that does
    assert P.main(["--run", run_id, *args]) == 2
    err = capsys.readouterr().err
    assert "python -m bench.predict" in err and err.count("\n") == 1
    # the tagged file gone: the run's model.pt artifact is served, fetched once into the cache
    gone = tracker.start("w", {"checkpoint": str(tmp_path / "moved" / "model.pt")})
    tracker.log_file(gone, ckpt)
    cache = tmp_path / "cache"
    assert serving.main(["--run", gone, "--cache-dir", str(cache), *args]) == 0
    assert (cache / gone / "model.pt").read_bytes() == Path(ckpt).read_bytes()
    model = load_checkpoint(ckpt)
    assert str(model.cfg.components) == "value+adapters+decoder"


class _Masks:
    """An evaluator that keeps the masks the evaluation scored, by sentence id."""

    def __init__(self, model, protocol):
        self.model, self.protocol = model, protocol

    def reset(self):
        self.masks = {}

    def process(self, batch, output):
        from risclip.engine import binarise

        for m, mask in zip(batch["meta"], binarise(self.model, output, batch, self.protocol)):
            self.masks[m["sent_id"]] = mask.cpu().numpy()

    def compute(self):
        return {}


def test_predict_serves_the_cut_and_precision_the_run_was_scored_at(synthref_root, tmp_path, capsys):
    """A run that chose its cut on val (under CPU bf16 autocast) stores both in model.pt; predict, with no
    --threshold, gives exactly the test masks the evaluation scored, and says which cut it used."""
    import dataclasses

    from risclip.engine import build_dataset, evaluate, read_scoring
    from risclip.metrics import get_protocol

    data = DataConfig(data_root=str(synthref_root), max_train_samples=16, max_eval_samples=6)
    train = TrainConfig(stage1_epochs=1, stage2_epochs=0, batch_size=8, eval_batch_size=4, progress=False,
                        threshold_from_val=True, cpu_amp=True)
    torch.manual_seed(5)  # a CLIP file, as real runs have (random weights would be drawn anew at every load)
    clip_file = tmp_path / "clip.pt"
    torch.save(RISCLIP.from_config(ModelConfig.tiny()).clip.state_dict(), clip_file)
    model_cfg = ModelConfig.tiny(components="adapters", pretrained=str(clip_file))
    result = run_variant(model_cfg, train, data, tmp_path / "run")
    scoring = read_scoring(result.checkpoint)
    assert scoring["threshold"] == result.threshold and scoring["cpu_amp"] is True
    assert "val mIoU" in scoring["rule"]
    assert result.threshold != 0.5  # else this test could not tell a served cut from the old fixed one
    # the masks the evaluation scored, made again by the scorer's own path from the checkpoint
    model = load_checkpoint(result.checkpoint)
    cut = dataclasses.replace(get_protocol("ours"), threshold=result.threshold)
    keeper = _Masks(model, cut)
    test_set = build_dataset(data, model_cfg, data.test_split, train=False)
    evaluate(model, test_set, train, torch.device("cpu"), evaluators=[keeper], protocols=[cut])
    assert len(keeper.masks) == len(test_set) == len(result.per_sample)
    iou = {r["sent_id"]: r["iou"] for r in result.per_sample}
    for i in range(len(test_set)):
        meta = test_set[i]["meta"]
        image = test_set.images[meta["image_id"]]["file_name"]
        out = tmp_path / f"mask-{i}.png"
        assert P.main(["--checkpoint", result.checkpoint, "--image", str(synthref_root / "images" / image),
                       "--text", meta["text"], "--out", str(out)]) == 0
        served = np.asarray(Image.open(out)) > 0
        assert np.array_equal(served, keeper.masks[meta["sent_id"]]), meta["text"]
        target = test_set[i]["orig_mask"].numpy()
        assert (served & target).sum() / max(1, (served | target).sum()) == pytest.approx(iou[meta["sent_id"]], abs=1e-12)
        assert f"cut {result.threshold:.2f}, the cut the run was scored at" in capsys.readouterr().out
    # --threshold still overrides; a checkpoint without a stored cut is cut at 0.5 and says so
    assert P.main(["--checkpoint", result.checkpoint, "--image", str(synthref_root / "images" / image), "--text", "x",
                   "--threshold", "0.7", "--out", str(out)]) == 0
    assert "cut 0.70 (--threshold)" in capsys.readouterr().out
    old = torch.load(result.checkpoint, weights_only=True)
    del old["scoring"]
    torch.save(old, tmp_path / "old.pt")
    assert P.main(["--checkpoint", str(tmp_path / "old.pt"), "--image", str(synthref_root / "images" / image),
                   "--text", "x", "--out", str(out)]) == 0
    assert "cut 0.50: this checkpoint stores no cut" in capsys.readouterr().out

