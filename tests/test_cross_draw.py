import pandas as pd
import pytest

from bench.experiments.cross_draw import DrawRuns, as_table, main, render


def _rows(ious: list[float], offset: int = 0) -> list[dict]:
    # two expressions per image, so the bootstrap resamples images
    return [{"sent_id": offset + i, "image_id": offset + i // 2, "kind": "attribute", "iou": v}
            for i, v in enumerate(ious)]


def test_as_table_aligns_expressions_with_their_images():
    t, groups = as_table({0: _rows([0.1, 0.2, 0.3, 0.4]), 1: _rows([0.5, 0.6, 0.7, 0.8])})
    assert t.shape == (2, 4) and t[1, 2] == pytest.approx(70.0)
    assert groups == [0, 0, 1, 1]


def test_render_splits_the_draws_gap_into_test_split_and_training_draw(tmp_path):
    n = 40
    base = [0.3 + 0.01 * (i % 7) for i in range(n)]
    # the models of draw 1 score 5 points more anywhere; draw 1's test split is 10 points easier for anyone
    cells = {("0", "0"): {s: _rows(base) for s in (0, 1)},
             ("0", "1"): {s: _rows([v + 0.10 for v in base], 1000) for s in (0, 1)},
             ("1", "0"): {s: _rows([v + 0.05 for v in base]) for s in (3, 4)},
             ("1", "1"): {s: _rows([v + 0.15 for v in base], 1000) for s in (3, 4)}}
    found = {"0": DrawRuns("0", "p0", "python -m bench.ablate", [{"seed": 0}, {"seed": 1}]),
             "1": DrawRuns("1", "p1", "python -m bench.ablate --data-seed 1", [{"seed": 3}, {"seed": 4}])}
    checks = [("0", 0, 40.0, 40.0), ("1", 3, 45.0, 47.0)]
    path = render(found, cells, checks, "p", 1, "value+adapters", tmp_path, "x", "python -m bench.cross_draw")
    text = path.read_text()
    assert "draw 1 minus draw 0: +15.00" in text  # what the ladder reports compare
    assert text.count("Test split alone") == 2 and "minus draw 0): +10.00" in text
    assert "paired per expression): +5.00 [+5.00, +5.00]" in text  # a constant gap: a CI of zero width
    assert "agree" in text and "DIFFER" in text  # 45 against 47 is flagged
    csv = pd.read_csv(tmp_path / "x.csv")
    assert len(csv) == 4 and set(csv["images"]) == {n // 2}


def test_bad_draws_and_an_empty_store_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--draws", "0,0"])
    assert "two different data seeds" in capsys.readouterr().err
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: no finished bench.ablate invocation on draw 0" in err and "Traceback" not in err


def test_scorer_loads_each_checkpoint_and_builds_each_test_split_once(tmp_path, monkeypatch):
    import types

    import risclip.engine as engine
    from bench.experiments.cross_draw import Scorer
    from bench.spine import presets as P

    calls = {"load": 0, "build": 0}
    cfg = types.SimpleNamespace(image_size=32, context_length=16)

    def load(path, dev):
        calls["load"] += 1
        return types.SimpleNamespace(cfg=cfg, path=path)

    def build(data, model_cfg, split, train):
        calls["build"] += 1
        return ("test", data.data_root)

    def evaluate(model, test, train_cfg, dev, desc, protocols):
        return types.SimpleNamespace(per_sample=[{"ckpt": model.path, "test": test[1],
                                                  "threshold": protocols[0].threshold}])

    monkeypatch.setattr(engine, "load_checkpoint", load)
    monkeypatch.setattr(engine, "build_dataset", build)
    monkeypatch.setattr(engine, "evaluate", evaluate)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    base = P.get_preset(P.DEFAULT_PRESET)
    scorer = Scorer({d: P.with_data_seed(base, int(d)) for d in ("0", "1")})
    rows = [scorer.score(str(c), 0.4, d) for c in (a, b) for d in ("0", "1", "0")]
    assert calls == {"load": 2, "build": 2}
    assert rows[1][0]["test"] != rows[0][0]["test"] and rows[0][0]["threshold"] == 0.4
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        scorer.score(str(tmp_path / "missing.pt"), None, "0")
