import json

import pytest
import torch

from bench.proxy.pretrain_clip import PretrainConfig, main, pretrain
from risclip.backbone import create_clip


def test_pretrain_saves_an_open_clip_checkpoint_and_reuses_it(synthref_root):
    cfg = PretrainConfig(data_root=str(synthref_root), steps=3, batch_size=8, seed=0)
    path, summary = pretrain(cfg, progress=False)
    assert path.is_file() and 0.0 <= summary["val_retrieval_top1"] <= 100.0
    assert summary["train_images"] > summary["val_images"] > 0  # val images are never trained on
    clip = create_clip("RIS-Tiny", str(path), 96)  # the user's pretrained=<path> route
    state = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(clip.state_dict()["visual.proj"], state["visual.proj"])
    mtime = path.stat().st_mtime_ns
    again, _ = pretrain(cfg, progress=False)
    assert again == path and path.stat().st_mtime_ns == mtime  # cached, not retrained
    other, _ = pretrain(PretrainConfig(data_root=str(synthref_root), steps=3, batch_size=8, seed=1), progress=False)
    assert other != path
    assert json.loads(path.with_suffix(".json").read_text())["config"]["steps"] == 3


def test_cli_rejects_missing_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data-root", str(tmp_path / "nothing")])
    assert e.value.code == 2
    assert "no synthref/captions.json" in capsys.readouterr().err


def test_v2_pretrains_on_its_own_corpus_and_reports_probes(synthref_root, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(synthref_root, root)
    cfg = PretrainConfig(data_root=str(root), image_size=64, steps=3, batch_size=8, corpus_images=60)
    path, summary = pretrain(cfg, progress=False)
    assert (root / "caption_corpus" / "captions.json").is_file()
    assert summary["train_images"] == 57 and summary["val_images"] == 3  # 5% held out, never trained on
    for probe in ("attribute", "place", "relation"):
        assert 0.0 <= summary["probes"][f"{probe}_probe"] <= 100.0 and summary["probes"][f"{probe}_probe_n"] >= 1
    create_clip("RIS-Tiny", str(path), 128)  # pre-trained at 64 px, used at 128 (position embeddings resized)
    # v1 and v2 never share a cache file, and v1's names did not change with v2's fields
    v1 = PretrainConfig(data_root=str(root), steps=3, batch_size=8)
    assert v1.cache_path() != cfg.cache_path() and "corpus_images" not in str(v1.cache_path())
    bigger = PretrainConfig(data_root=str(root), image_size=64, steps=3, batch_size=8, corpus_images=80)
    pretrain(bigger, progress=False)  # another corpus size makes the corpus again
    assert len(json.loads((root / "caption_corpus" / "captions.json").read_text())["images"]) == 80


def test_probe_pairs_differ_only_in_the_probed_word():
    from bench.proxy.clip_probes import SWAPS, probe_pairs

    objs = [[{"shape": "square", "colour": "red", "size": "large", "striped": False, "cx": 20.0, "cy": 64.0},
             {"shape": "circle", "colour": "blue", "size": "small", "striped": False, "cx": 100.0, "cy": 60.0}]]
    pairs = probe_pairs(objs, 128, 0)
    _, true, false = pairs["place"][0]
    assert true.endswith(("on the left", "on the right")) and false == true.rsplit(" on the ", 1)[0] + " " + SWAPS[true[true.index("on the "):]]
    _, true, false = pairs["relation"][0]
    assert ("to the right of it" in true) != ("to the right of it" in false)
    _, true, false = pairs["attribute"][0]
    assert true.split()[-1] == false.split()[-1] and true != false
