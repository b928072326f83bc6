import math

from bench.experiments import budget
from bench.spine.presets import get_preset


def test_stage1_budget_multiplies_sentences_times_epochs():
    p = get_preset("synth-refcoco")  # 2000 sentences x 4 epochs
    assert budget.stage1_overrides(p, 1, 9000) == []
    assert budget.stage1_overrides(p, 3, 9000) == ["data.max_train_samples=6000", "train.stage1_epochs=4"]
    # 10x: every sentence the split has, and the rest made up with epochs (rounded up)
    assert budget.stage1_overrides(p, 10, 9132) == ["data.max_train_samples=9132", "train.stage1_epochs=9"]


def _row(rung, seed, miou, pos, rel):
    return {"rung": rung, "seed": seed, "mIoU": miou, "train_seconds": 10.0 * rung,
            "position_select_mIoU": pos, "relation_select_mIoU": rel}


def test_summary_and_report_show_each_gap_against_the_budget(tmp_path):
    points = [{"axis": "stage-1 budget (x preset)", "budget": k,
               "rows": [_row(0, 0, 10, 30, 30), _row(1, 0, 12 + k, 35, 31), _row(2, 0, 13 + 2 * k, 40 + k, 33 + k)]}
              for k in (1, 3)]
    lines = budget.summary(points)
    assert lines[0]["gaps"] == {"1-0": 3.0, "2-1": 2.0} and lines[1]["gaps"] == {"1-0": 5.0, "2-1": 4.0}
    assert lines[1]["position_select"][2] == 43 and math.isclose(lines[1]["relation_select"][1], 31)
    path = budget.write_report(lines, tmp_path, "b", "python -m bench.budget --multipliers 1,3")
    md = path.read_text()
    assert "| 3 | 1 | 10.00 | 15.00 | 19.00 | 1-0: +5.00, 2-1: +4.00 |" in md
    assert (tmp_path / "b.png").stat().st_size > 1000 and (tmp_path / "b.json").is_file()


def test_a_sweep_grown_in_pieces_keeps_the_points_recorded_before(tmp_path):
    first = budget.summary([{"axis": "stage-1 budget (x preset)", "budget": k,
                             "rows": [_row(0, 0, 10, 30, 30), _row(1, 0, 12 + k, 35, 31), _row(2, 0, 13 + k, 36, 32),
                                      _row(3, 0, 14 + k, 37, 33)]} for k in (1, 3)])
    for s in first:
        s["command"] = "python -m bench.budget --multipliers 1,3"
    budget.write_report(first, tmp_path, "b")
    # a later piece: only rungs 0-2 at 10x
    later = budget.summary([{"axis": "stage-1 budget (x preset)", "budget": 10,
                             "rows": [_row(0, 0, 10, 30, 30), _row(1, 0, 30, 35, 31), _row(2, 0, 29, 36, 32)]}])
    later[0]["command"] = "python -m bench.budget --multipliers 10 --rungs 0,1,2"
    lines = budget.merge(budget.load_lines(tmp_path / "b.json"), later)
    assert [s["budget"] for s in lines] == [1, 3, 10]
    md = budget.write_report(lines, tmp_path, "b").read_text()
    assert "--multipliers 1,3`" in md and "--multipliers 10 --rungs 0,1,2`" in md
    assert "| 10 | 1 | 10.00 | 30.00 | 29.00 | - | 1-0: +20.00, 2-1: -1.00 |" in md
    assert "| 3 | 1 | 10.00 | 15.00 | 16.00 | 17.00 |" in md


def test_a_proxy_sweep_reports_each_proxys_probes(tmp_path):
    points = [{"axis": "proxy steps", "budget": steps, "probes": {"retrieval": 4.0, "attribute": 96.0, "place": p, "relation": 50.0},
               "rows": [_row(0, 0, 20, 30, 30), _row(1, 0, 30, 35, 31), _row(2, 0, 31, 36, 32)]}
              for steps, p in ((300, 47.5), (1200, 61.25))]
    lines = budget.summary(points)
    assert lines[1]["probes"]["place"] == 61.25
    md = budget.write_report(lines, tmp_path, "p", "python -m bench.budget --proxy-steps 300,1200").read_text()
    assert "| budget | retrieval | attribute | place | relation |" in md and "| 1200 | 4.0 | 96.0 | 61.2 | 50.0 |" in md


def test_stage2_scales_with_stage1_only_where_the_decoder_trains():
    p = get_preset("synthref")  # every train sentence twice in stage 1; stage 2: 1 epoch
    assert budget.budget_overrides(p, 1, 8900, decoder=True) == []
    assert budget.budget_overrides(p, 3, 8900, decoder=False) == ["data.max_train_samples=8900", "train.stage1_epochs=6"]
    assert budget.budget_overrides(p, 3, 8900, decoder=True)[-1] == "train.stage2_epochs=3"


def _ps(rung, seed, base, images=20, per=3):
    """A row with per-expression IoUs: rung ``rung`` scores ``base + rung`` on every expression, +-1 by image."""
    per_sample = {i * per + j: (base + 5 * rung + (1 if i % 2 else -1) + seed * 0.1, i)
                  for i in range(images) for j in range(per)}
    mean = sum(v[0] for v in per_sample.values()) / len(per_sample)
    return {"kind": "variant", "rung": rung, "seed": seed, "mIoU": mean, "train_seconds": 100.0, "swap_mIoU": 8.0,
            "position_select_mIoU": 50.0, "relation_select_mIoU": 50.0, "per_sample": per_sample}


def test_each_gain_has_its_ci_and_the_report_says_whether_it_holds_grows_or_shrinks(tmp_path):
    def point(k, step2):
        rows = [_ps(1, s, 40) for s in (0, 1)] + [_ps(2, s, 40 + step2 - 5) for s in (0, 1)]
        ref = dict(_ps(1, 0, 70), kind="reference", swap_mIoU=3.0)
        return {"axis": "stage-1 budget (x preset)", "budget": k, "rows": rows + ([ref] if k == 10 else [])}

    lines = budget.summary([point(1, 5.0), point(3, 5.0), point(10, 0.0)])
    est, low, high = lines[0]["gap_ci"]["2-1"]
    assert abs(est - 5.0) < 1e-9 and low <= est <= high
    assert abs(lines[2]["gap_ci"]["2-1"][0]) < 1e-9 and "per_sample" not in str(lines)
    assert lines[2]["reference"]["mIoU"] > 70 and lines[2]["reference"]["swap"] == 3.0
    md = budget.write_report(lines, tmp_path, "b", "python -m bench.budget").read_text()
    assert "rung 2 over 1: +5.00 [+5.00, +5.00] at 1x, +0.00 [+0.00, +0.00] at 10x: it vanishes" in md
    assert "Step by step: 1x to 3x holds; 3x to 10x vanishes." in md  # the middle budget is not skipped
    assert "| 10 | 8.00 | 8.00 | " in md and "- At 3x: the rungs keep the ladder's order" in md
    assert "fewer seeds" not in md  # every budget ran seeds 0 and 1
    one_seed = budget.summary([point(1, 5.0), {**point(10, 0.0), "rows": [r for r in point(10, 0.0)["rows"]
                                                                        if r["seed"] == 0]}])
    md = budget.write_report(one_seed, tmp_path, "one", "python -m bench.budget").read_text()
    assert "At 10x (1 seed) fewer seeds ran than at the other budgets: a one-seed CI resamples test images alone" in md
    # the content-free control beside the swap, where the runs carry it
    with_generic = budget.summary([{**point(1, 5.0), "rows": [dict(r, generic_mIoU=12.0) for r in point(1, 5.0)["rows"]]}])
    md = budget.write_report(with_generic, tmp_path, "g", "python -m bench.budget").read_text()
    assert "| budget | rung 1 swap / generic | rung 2 swap / generic |" in md and "| 1 | 8.00 / 12.00 | 8.00 / 12.00 |" in md
    assert budget.load_lines(tmp_path / "g.json")[0]["generic"] == {1: 12.0, 2: 12.0}
    # a point that trained fewer rungs than the others leaves their cells empty ('-', never 'nan')
    fewer = budget.summary([{"axis": "stage-1 budget (x preset)", "budget": 10, "rows": [_ps(1, 0, 40)]}])
    md = budget.write_report(budget.merge(with_generic, fewer), tmp_path, "f", "python -m bench.budget").read_text()
    assert "nan" not in md and "| 10 | 1 | 45.00 | - |" in md and "| 10 | 8.00 / - | - / - |" in md
    # a later piece at a recorded budget adds its rungs and keeps the others
    later = budget.summary([{"axis": "stage-1 budget (x preset)", "budget": 3, "rows": [_ps(3, 0, 40)]}])
    merged = budget.merge(lines, later)
    assert sorted(merged[1]["mIoU"]) == [1, 2, 3] and set(merged[1]["gaps"]) == {"2-1", "3-2"}


def test_a_budget_point_trains_no_reference_beside_its_rungs(monkeypatch, tmp_path):
    # the reference is the reference point's, at the ladder's 1x rung-1 time; ablate's default beside a 3x rung 1
    # would train one at the 3x rung's time under the 3x data identity, filed as the preset's 1x and 3x
    import json
    from pathlib import Path

    from bench.spine import ablate

    calls = []

    def fake_main(argv):
        calls.append(argv)
        Path(argv[argv.index("--output") + 1]).write_text(json.dumps({"rows": []}))
        return 0

    monkeypatch.setattr(ablate, "main", fake_main)
    budget.run_point("synthref", [1, 2, 4], "0,1,2", ["train.stage1_epochs=6"], None, ["--no-progress"],
                     ["train.stage1_epochs=6", "train.stage2_epochs=3"])
    assert len(calls) == 2  # the rungs without the decoder, then those with it
    for argv in calls:
        i = argv.index("--reference")
        assert argv[i + 1] == "" and "--reference-seconds" not in argv
    assert calls[1][-2:] == ["--set", "train.stage2_epochs=3"]


def test_each_point_joins_the_report_as_it_ends(monkeypatch, tmp_path):
    """A sweep stopped at its second point (killed, or a run failing) keeps its first in budget.json."""
    from types import SimpleNamespace

    import bench.spine.assets as assets

    monkeypatch.setattr(budget.P, "build", lambda name: SimpleNamespace(name=name))
    monkeypatch.setattr(assets, "ensure_data", lambda preset, _: None)
    monkeypatch.setattr(budget, "train_sentences", lambda preset: 100)
    monkeypatch.setattr(budget, "stage1_overrides", lambda preset, k, n: [f"k={k:g}"])
    monkeypatch.setattr(budget, "budget_overrides", lambda preset, k, n, decoder: [f"k={k:g}"])
    monkeypatch.setattr(budget, "with_kinds", lambda points, uri, exp: points)

    def fake_point(preset, rungs, seeds, sets, pretrained, extra, decoder_sets=None):
        if sets == ["k=3"]:
            raise RuntimeError("rung 2 at 3x: out of disk")
        return [_ps(1, 0, 30), _ps(2, 0, 40)]

    monkeypatch.setattr(budget, "run_point", fake_point)
    argv = ["--multipliers", "1,3", "--rungs", "1,2", "--out-dir", str(tmp_path)]
    assert budget.main(argv) == 2
    lines = budget.load_lines(tmp_path / "budget.json")
    assert [s["budget"] for s in lines] == [1.0] and lines[0]["mIoU"] == {1: 35.0, 2: 50.0}
    assert lines[0]["command"] == "python -m bench.budget " + " ".join(argv)
    assert (tmp_path / "budget.md").is_file()
    # run again with the 3x point mended: both points, the first once
    monkeypatch.setattr(budget, "run_point", lambda *a, **k: [_ps(1, 0, 35), _ps(2, 0, 41)])
    assert budget.main(argv) == 0
    lines = budget.load_lines(tmp_path / "budget.json")
    assert [s["budget"] for s in lines] == [1.0, 3.0] and lines[1]["mIoU"] == {1: 40.0, 2: 51.0}
