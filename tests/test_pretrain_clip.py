import json

import pytest
import torch

from bench.pretrain_clip import PretrainConfig, main, pretrain
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
