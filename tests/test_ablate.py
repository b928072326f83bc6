"""bench.ablate end to end (--quick), resume after an interruption, reuse by hash, and the report."""

from __future__ import annotations

import json

import pytest

from bench.spine import ablate
from bench.spine.ablate import choose_variants, parse_seeds, run_identity
from bench.spine.presets import DEFAULT_PRESET, get_preset, quick
from risclip.config import LADDER, Components


def test_parse_seeds_and_variants():
    assert parse_seeds("0, 1,2,1") == [0, 1, 2]
    with pytest.raises(ablate.UsageError):
        parse_seeds("a,b")
    a = ablate.build_parser().parse_args([])
    assert choose_variants(a) == list(LADDER)
    a = ablate.build_parser().parse_args(["--components", "adapters,cfe"])
    assert choose_variants(a) == [Components(adapters=True, cfe=True)]
    a = ablate.build_parser().parse_args(["--all", "--ladder"])
    assert len(choose_variants(a)) == 32


def test_help_and_bad_input_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as e:
        ablate.main(["--help"])
    assert e.value.code == 0
    assert "--components" in capsys.readouterr().out
    assert ablate.main(["--components", "adaptors"]) == 2
    err = capsys.readouterr().err
    assert "unknown component 'adaptors'" in err and "Traceback" not in err
    assert ablate.main(["--seeds", "x"]) == 2
    assert ablate.main(["--output", "r.txt"]) == 2
    assert ablate.main(["--reference-seconds", "0"]) == 2
    assert "--reference-seconds must be positive" in capsys.readouterr().err


def test_run_identity_ignores_paths_but_not_seed_or_data(tmp_path):
    p = quick(get_preset(DEFAULT_PRESET))
    c = Components(adapters=True)
    _, h0 = run_identity(p, c, 0, "fp")
    moved = ablate.P.with_data_root(p, str(tmp_path / "elsewhere"))
    assert run_identity(moved, c, 0, "fp")[1] == h0
    assert run_identity(p, c, 1, "fp")[1] != h0
    assert run_identity(p, c, 0, "other-data")[1] != h0
    assert run_identity(p, Components(), 0, "fp")[1] != h0
    # rung 0 trains nothing: its seeds share one run
    assert run_identity(p, Components(), 0, "fp")[1] == run_identity(p, Components(), 2, "fp")[1]


@pytest.mark.slow
def test_quick_ladder_resumes_reuses_and_reports(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--quick", "--data-root", str(tmp_path / "data"), "--tracking-uri", uri, "--workdir",
              str(tmp_path / "runs"), "--no-progress", "--output", str(tmp_path / "rows.json")]

    # 1. interrupt the run of rung 2: rungs 0 and 1 must survive
    from bench.spine import variant

    real = variant.run_variant

    def interrupting(model_cfg, *args, **kwargs):
        if model_cfg.components == LADDER[2]:
            raise KeyboardInterrupt
        # as before the text controls existed: the reused runs get them from their checkpoints in step 2
        return real(model_cfg, *args, **{**kwargs, "text_controls": False})

    monkeypatch.setattr(variant, "run_variant", interrupting)
    assert ablate.main(common) == 130
    monkeypatch.setattr(variant, "run_variant", real)

    # 2. the same command continues: rungs 0-1 reused, 2-4 trained
    assert ablate.main(common) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    variants = [r for r in rows if r["kind"] == "variant"]
    assert [r["rung"] for r in variants] == [0, 1, 2, 3, 4]
    assert [r["reused"] for r in variants] == [True, True, False, False, False]
    for r in variants:
        assert 0.0 <= r["mIoU"] <= 100.0 and r["inference_ms_per_image"] > 0 and r["mlflow_run_id"]
        assert 0.0 <= r["select_mIoU"] <= 100.0
        # the text controls, for every variant, reused ones included
        assert 0.0 <= r["swap_mIoU"] <= 100.0 and 0.0 <= r["generic_mIoU"] <= 100.0
        assert any(0.0 <= r[f"{k}_swap_mIoU"] <= 100.0 for k in ("attribute", "position", "relation"))
    assert {r["components"] for r in rows if r["kind"] == "baseline"} == {
        "whole-image", "centre-blob", "largest-object", "random-object", "objectness"}
    # the from-scratch reference at 1x and 3x rung 1's training time, scored like a rung
    refs = {r["components"]: r for r in rows if r["kind"] == "reference"}
    assert set(refs) == {"reference (1x rung-1 time)", "reference (3x rung-1 time)"}
    for r in refs.values():
        assert 0.0 <= r["mIoU"] <= 100.0 and 0.0 <= r["swap_mIoU"] <= 100.0 and 0.0 <= r["select_mIoU"] <= 100.0

    # 3. a third time nothing trains
    assert ablate.main(common) == 0
    again = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert all(r["reused"] for r in again if r["kind"] == "variant")
    assert [r["mIoU"] for r in again if r["kind"] == "variant"] == [r["mIoU"] for r in variants]

    # the tracked runs: one killed run for rung 2, finished children with params, tags and artifacts
    from bench.spine.tracking import Tracker

    tracker = Tracker(uri, f"risclip-{DEFAULT_PRESET}-quick")
    runs = tracker.runs({"kind": "variant"}, status=None)
    statuses = sorted(r.info.status for r in runs)
    assert statuses.count("KILLED") == 1 and statuses.count("FINISHED") == 5
    done = next(r for r in runs if r.info.status == "FINISHED" and r.data.tags["rung"] == "4")
    assert done.data.tags["git_revision"] and done.data.tags["components"] == str(LADDER[4])
    assert done.data.params["train.seed"] == "0" and "model.adapter_dim" in done.data.params
    assert len(tracker.client.get_metric_history(done.info.run_id, "stage1_loss")) >= 1
    artifacts = {a.path for a in tracker.client.list_artifacts(done.info.run_id)}
    assert {"config.json", "metrics.json", "val_predictions.png"} <= artifacts

    # 4. the report renders from the store, from the latest plain ladder: a later --set run does not displace it
    from bench.reporting import report

    assert ablate.main(common + ["--components", "adapters", "--set", "train.lr=0.01", "--no-baselines"]) == 0

    assert report.main(["--tracking-uri", uri, "--experiment", f"risclip-{DEFAULT_PRESET}-quick",
                        "--out-dir", str(tmp_path / "reports")]) == 0
    md = (tmp_path / "reports" / "ladder.md").read_text()
    assert "python -m bench.report" in md and "paper" in md and "| 4 | " + str(LADDER[4]) in md
    assert "Like for like" in md and "Runs produced by: `python -m bench.ablate --quick" in md
    assert "CFE pays on position expressions" in md and "Rung 3 is not below rung 2" in md
    assert "## The data" in md and "stage-1 oracle cap" in md and "Proxy CLIP probes" in md
    assert "Rung 4 follows its text, swap mIoU at most a third" in md and "Rung 1's mIoU at least half the stage-1 oracle cap" in md
    assert "place " in md and "% of " in md  # the proxy CLIP's probes
    assert "## Attribute select by form" in md and "| size+colour |" in md
    assert "## Tuning probes" in md and "`--set train.lr=0.01`" in md  # the --set run is listed as a probe
    assert (tmp_path / "reports" / "ladder.png").stat().st_size > 1000
    assert (tmp_path / "reports" / "ladder-grids.png").stat().st_size > 1000
    # every trained rung's row links to its learning curve (val mIoU after each epoch of each stage)
    assert "## Learning curves" in md and all(f"(#curve-rung-{r})" in md for r in (1, 2, 3, 4))
    assert "(#curve-reference-1x-rung-1-time)" in md and "(#curve-reference-3x-rung-1-time)" in md
    assert (tmp_path / "reports" / "ladder-curves.png").stat().st_size > 1000
    assert (tmp_path / "reports" / "ladder.csv").read_text().count("\n") == 13  # header + 5 rungs + 5 baselines + 2 references

    # 5. a ladder on a study's chosen settings (--tuned) is set beside the preset's, not taken for it
    tuned = tmp_path / "tuned.json"
    variants_file = {str(c): {"rung": r, "overrides": ["train.lr=0.01"] if r == 1 else [], "val_mIoU": 1.0,
                              "trials": 2, "from_preset": r != 1, "preset_val_mIoU": 0.5} for r, c in enumerate(LADDER)}
    tuned.write_text(json.dumps({"preset": f"{DEFAULT_PRESET}-quick", "variants": variants_file}))
    assert ablate.main(common + ["--tuned", str(tuned), "--no-baselines"]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert all(r["reused"] for r in rows)  # rung 1's settings ran as the --set probe above; the rest are the preset's
    assert report.main(["--tracking-uri", uri, "--experiment", f"risclip-{DEFAULT_PRESET}-quick",
                        "--out-dir", str(tmp_path / "reports")]) == 0
    md2 = (tmp_path / "reports" / "ladder.md").read_text()
    assert md2.split("## The preset's ladder")[0].count("| 4 | ") == md.split("## Tuning probes")[0].count("| 4 | ")
    assert "## The preset's ladder and the tuned ladder" in md2 and str(tuned) in md2
    assert "rung 1 (" + str(LADDER[1]) + "): `train.lr=0.01`" in md2 and "the preset's own settings" in md2
    assert "Targets, checked again on the tuned ladder" in md2


def test_set_overrides_fields_with_types_and_clear_errors(capsys):
    from bench.spine.presets import override

    p = get_preset("synth-cpu")
    q = override(p, ["train.stage1_epochs=8", "train.lr=1e-2", "model.cfe_layers=[0,2]", "model.cfe_norm=false",
                     "data.max_eval_samples=null"])
    assert (q.train.stage1_epochs, q.train.lr, q.model.cfe_layers, q.model.cfe_norm) == (8, 0.01, (0, 2), False)
    assert q.data.max_eval_samples is None and p.train.stage1_epochs == 4
    # an overridden field changes the run's identity, so it is tracked as its own variant
    assert run_identity(q, LADDER[1], 0, "f")[1] != run_identity(p, LADDER[1], 0, "f")[1]
    for bad, says in [("train.lr", "section.field=value"), ("optim.lr=1", "section must be"),
                      ("train.nope=1", "valid: "), ("train.stage1_epochs=2.5", "integer"),
                      ("model.cfe_norm=1", "true or false"), ("model.components=cfe", "--components")]:
        with pytest.raises(ValueError, match=says):
            override(p, [bad])
    assert ablate.main(["--set", "train.stage1_epochs=x", "--no-progress"]) == 2
    assert "integer" in capsys.readouterr().err


def test_synthref_of_another_profile_in_the_data_folder_is_a_clear_error(dense_root):
    from bench.spine.assets import UsageError, ensure_data
    from bench.spine.presets import with_data_root

    with pytest.raises(UsageError, match="profile: dense here, refcoco wanted"):
        ensure_data(with_data_root(get_preset("synth-refcoco"), str(dense_root)), False)


def test_fresh_draw_has_its_own_folder_and_seed_and_keeps_the_proxy():
    p = ablate.P.get_preset("synth-refcoco")
    d = ablate.P.with_data_seed(p, 3)
    assert d.synthref.seed == 3 and d.data.data_root == p.data.data_root + "-draw3"
    assert d.proxy_clip == p.proxy_clip  # the same CLIP, whatever the draw
    assert ablate.P.with_data_seed(p, p.synthref.seed) == p
    with pytest.raises(ValueError, match="real data"):
        ablate.P.with_data_seed(ablate.P.get_preset("paper-b"), 1)


def test_report_takes_the_plain_ladder_of_the_asked_draw_only():
    from types import SimpleNamespace

    from bench.reporting.ladder_runs import is_plain_ladder

    def run(**tags):
        base = {"variants": ";".join(str(c) for c in LADDER)}
        return SimpleNamespace(data=SimpleNamespace(tags={**base, **tags}))

    assert is_plain_ladder(run()) and is_plain_ladder(run(data_seed="0"))  # older runs carry no data_seed tag
    assert not is_plain_ladder(run(data_seed="1")) and is_plain_ladder(run(data_seed="1"), "1")
    assert not is_plain_ladder(run(tuned="studies/tuned/x.json")) and not is_plain_ladder(run(overrides="train.lr=1"))


def test_tuning_probes_of_another_draw_are_not_set_beside_this_draws_runs():
    """A --set probe scored other data when it ran on another draw: the report of draw N lists draw N's only."""
    from types import SimpleNamespace

    from bench.reporting.ladder_runs import tuning_runs

    def run(run_id, kind, parent=None, **tags):
        tags = {"kind": kind, **({"mlflow.parentRunId": parent} if parent else {}), **tags}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id),
                               data=SimpleNamespace(tags=tags, metrics={"val_mIoU": 1.0, "test_mIoU": 2.0}))

    parents = [run("p0", "invocation", overrides="model.ske_form=joint"),  # before the data_seed tag: draw 0
               run("p1", "invocation", overrides="model.ske_form=joint", data_seed="1")]
    children = [run("c0", "variant", "p0", components="a", seed="0"), run("c1", "variant", "p1", components="b", seed="3")]

    class Store:
        def runs(self, filters, limit=None):
            return parents if filters["kind"] == "invocation" else children

    assert list(tuning_runs(Store())["components"]) == ["a"]
    assert list(tuning_runs(Store(), data_seed="1")["components"]) == ["b"]
    assert tuning_runs(Store(), data_seed="2").empty


@pytest.mark.slow
def test_tracking_uri_none_runs_without_mlflow_and_keeps_the_rows(quick_root, tmp_path):
    """A machine without MLflow (a lent GPU machine): runs live in memory, rows and run facts go to --output."""
    import subprocess
    import sys

    code = ("import sys; from bench.spine import ablate; "
            f"rc = ablate.main(['--quick', '--components', 'none', '--seeds', '0,1', '--data-root', {str(quick_root)!r}, "
            f"'--tracking-uri', 'none', '--workdir', {str(tmp_path / 'runs')!r}, '--no-progress', '--output', "
            f"{str(tmp_path / 'rows.json')!r}]); "
            "assert 'mlflow' not in sys.modules, 'mlflow was imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not tracked (--tracking-uri none)" in r.stdout
    out = json.loads((tmp_path / "rows.json").read_text())
    assert out["device"] == "cpu" and out["seeds"] == [0, 1] and out["wall_seconds"] > 0
    variants = [row for row in out["rows"] if row["kind"] == "variant"]
    assert [row["seed"] for row in variants] == [0, 1] and variants[1]["reused"]  # rung 0: one run for both seeds
    assert 0.0 <= variants[0]["mIoU"] <= 100.0 and 0.0 <= variants[0]["swap_mIoU"] <= 100.0
    assert {row["components"] for row in out["rows"] if row["kind"] == "baseline"} >= {"objectness"}


def test_grounding_targets_read_swap_shares_select_floors_and_the_oracle_cap():
    import pandas as pd

    from bench.reporting.report import grounding_target_lines

    variants = [{"rung": 0, "components": "value", "mIoU": 20.0, "swap_mIoU": float("nan")},
                {"rung": 1, "components": "value+adapters", "mIoU": 50.0, "swap_mIoU": 10.0},
                {"rung": 2, "components": "value+adapters+cfe", "mIoU": 30.0, "swap_mIoU": 15.0}]
    df = pd.DataFrame([{"kind": "variant", "components": c, "seed": s, "attribute_select_mIoU": a,
                        "position_select_mIoU": p}
                       for c, s, a, p in [("value", 0, 70.0, 30.0), ("value+adapters", 0, 86.0, 50.0),
                                          ("value+adapters", 1, 88.0, 54.0), ("value+adapters+cfe", 0, 80.0, 60.0)]])
    lines = grounding_target_lines(variants, df, 92.4)
    text = "\n".join(lines)
    assert "Rung 1 follows its text, swap mIoU at most a third of its mIoU: 10.00 of 50.00 (20%; met)" in text
    assert "Rung 2 follows its text" in text and "(50%; NOT met)" in text
    assert "Rung 0 picks the referent of attribute expressions, select mIoU at least 65: 70.00" in text
    assert "Rung 1 picks the referent of attribute expressions, select mIoU at least 85: 87.00 ± 1.41 (met)" in text
    assert "Rung 1 picks the referent of position expressions, select mIoU at least 55: 52.00 ± 2.83 (NOT met)" in text
    assert "Rung 1's mIoU at least half the stage-1 oracle cap (92.4): 50.00 (met)" in text
    assert not any("Rung 0 follows" in x for x in lines)


def test_fresh_draw_report_checks_the_rung1_mean_against_the_committed_ci():
    """The test-split target: a fresh draw's rung-1 mean inside the committed draw's bootstrap CI is met; one
    shifted by more than its half-width is not."""
    from types import SimpleNamespace

    import numpy as np

    from bench.reporting.ladder_runs import load_rows
    from bench.reporting.report import PerExpression, other_draw_lines
    from bench.spine.results import ROW_FIELDS, summarise

    rung1 = str(LADDER[1])
    rng = np.random.default_rng(0)
    ious = {f"c{s}": rng.uniform(0.2, 0.6, 500) for s in range(3)}  # the committed draw, mean about 40

    def rows(prefix, shift):
        out = []
        for s in range(3):
            run_id = f"{prefix}{s}"
            ious.setdefault(run_id, ious[f"c{s}"] + shift)
            out.append({**{k: None for k in ROW_FIELDS}, "kind": "variant", "rung": 1, "components": rung1, "seed": s,
                        "mIoU": 100 * float(ious[run_id].mean()), "oIoU": 0.0, "mlflow_run_id": run_id})
        return out

    class Store:
        def __init__(self, shift, images=False):
            self.results = {"base": rows("c", 0.0), "new": rows(f"n{shift}-", shift)}
            self.images = images

        def runs(self, filters, limit=None):
            tags = {"variants": ";".join(str(c) for c in LADDER), "command": "python -m bench.ablate", "seeds": "0,1,2"}
            return [SimpleNamespace(info=SimpleNamespace(run_id="base"), data=SimpleNamespace(tags=tags))]

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(metrics={}))

        def load_json(self, run_id, name):
            if name == "results.json":
                return self.results[run_id]
            return {"per_sample": [{"sent_id": i, "iou": float(v), **({"image_id": i // 5} if self.images else {})}
                                   for i, v in enumerate(ious[run_id])]}

    def report(store):
        new = SimpleNamespace(info=SimpleNamespace(run_id="new"))
        df = load_rows(store, new)
        variants = [s for s in summarise(df.to_dict("records")) if s["kind"] == "variant"]
        return "\n".join(other_draw_lines(store, variants, "1", PerExpression(store, df)))

    for shift, verdict in ((0.003, "met"), (0.08, "NOT met")):
        text = report(Store(shift))
        assert "Test split large enough" in text and f"({verdict};" in text, text
        assert f"{100 * shift:+.2f} vs ±" in text and "500 expressions, resampled one by one" in text
        assert ("bench.cross_draw" in text) == (verdict == "NOT met")  # where to look when the draws differ
    # runs that recorded each expression's image: the CI resamples whole images (5 expressions each here)
    assert "500 expressions in 100 test images, resampled by image" in report(Store(0.003, images=True))


def test_the_ladder_time_target_is_checked_only_for_an_invocation_of_every_rung():
    import pandas as pd

    from bench.reporting.ladder_runs import reused_rung_runs
    from bench.reporting.report import target_lines

    def line(rung):
        return {"rung": rung, "components": str(LADDER[rung]), "mIoU": 10.0 + rung, "mIoU_sd": 0.1, "seeds": 3}

    empty = pd.DataFrame(columns=["max_abs_diff"])
    whole = target_lines([line(r) for r in range(len(LADDER))], [], empty, {"wall_seconds": 1800.0})
    assert whole[0].startswith("- Whole ladder, 3 seeds, in at most 60 minutes: 30.0 min (met")
    assert not any("Whole ladder" in x for x in target_lines([line(1)], [], empty, {"wall_seconds": 1800.0}))
    untimed = target_lines([line(r) for r in range(len(LADDER))], [], empty, {"wall_seconds": 1800.0}, timed=False)
    assert not any("Whole ladder" in x for x in untimed) and untimed == whole[1:]
    # runs reused from an earlier invocation cost this one nothing: its wall time times no ladder
    rows = pd.DataFrame({"kind": ["variant", "variant", "variant", "baseline", "variant"], "rung": [1, 2, 3, None, 0],
                         "reused": [False, True, "False", True, True]})
    assert reused_rung_runs(rows) == 1  # a reused baseline, or rung 0's one run for every seed, costs nothing
    # a rung-2 run that loaded its stage 1 from an earlier invocation's cache is not timed either; rung 4 may
    rows = pd.DataFrame({"kind": ["variant"] * 3, "rung": [2, 4, 1], "reused": [False, False, False],
                         "mlflow_run_id": ["a", "b", "c"]})

    class Runs:
        def get_run(self, run_id):
            tags = {"stage1_reused": "True" if run_id in ("a", "b") else "False"}
            return type("R", (), {"data": type("D", (), {"tags": tags})()})()

    assert reused_rung_runs(rows, Runs()) == 1
    again = target_lines([line(r) for r in range(len(LADDER))], [], empty, {"wall_seconds": 60.0}, reused=1)
    assert again[0] == ("- Whole ladder, 3 seeds, in at most 60 minutes: not timed by this invocation "
                        "(1 of its rung runs were reused from earlier ones, or their stage 1)")


def test_a_ladder_rerun_to_add_the_reference_is_timed_by_the_invocation_that_trained_its_rungs(monkeypatch):
    import types

    import pandas as pd

    from bench.reporting import ladder_runs as Q
    from bench.reporting import report as R

    def run(run_id, parent=None, status="FINISHED", metrics=None, command=""):
        tags = {"mlflow.parentRunId": parent, "command": command} if parent else {"command": command}
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id, status=status),
                                     data=types.SimpleNamespace(tags=tags, metrics=metrics or {}))

    store = {"a": run("a", "first"), "b": run("b", "first"), "c": run("c", "other"),
             "first": run("first", metrics={"wall_seconds": 3300.0}, command="python -m bench.ablate"),
             "other": run("other")}

    class Runs:
        def get_run(self, run_id):
            return store[run_id]

    fresh = pd.DataFrame({"kind": ["variant"] * 2, "rung": [1, 2], "reused": [False, False], "mlflow_run_id": ["a", "b"]})
    monkeypatch.setattr(Q, "load_rows", lambda tracker, parent: fresh)
    rows = pd.DataFrame({"kind": ["variant"] * 3, "rung": [0, 1, 2], "reused": [True, True, True],
                         "mlflow_run_id": ["a", "a", "b"]})
    first = Q.timing_invocation(Runs(), rows, "second")
    assert first is store["first"]
    assert Q.timing_invocation(Runs(), rows.assign(mlflow_run_id=["a", "a", "c"]), "second") is None  # two sources
    monkeypatch.setattr(Q, "load_rows", lambda tracker, parent: fresh.assign(reused=[True, False]))
    assert Q.timing_invocation(Runs(), rows, "second") is None  # the earlier one reused runs itself

    def line(rung):
        return {"rung": rung, "components": str(LADDER[rung]), "mIoU": 10.0, "mIoU_sd": 0.1, "seeds": 3}

    out = R.target_lines([line(r) for r in range(len(LADDER))], [], pd.DataFrame(columns=["max_abs_diff"]),
                         {"wall_seconds": 2400.0, "reference_seconds": 2300.0}, reused=2, timed_by=first)
    assert out[0].startswith("- Whole ladder, 3 seeds, in at most 60 minutes: 55.0 min (met; wall time of invocation "
                             "`first`")


def test_report_pins_the_preset_into_commands_typed_under_another_default():
    from bench.spine.presets import pinned_command

    assert pinned_command("python -m bench.ablate --no-progress", "synth-cpu") == \
        "python -m bench.ablate --preset synth-cpu --no-progress"
    assert pinned_command("python -m bench.ablate --preset synth-cpu", "synth-cpu") == "python -m bench.ablate --preset synth-cpu"
    assert pinned_command("python -m bench.ablate", DEFAULT_PRESET) == "python -m bench.ablate"
    assert pinned_command("?", "synth-cpu") == "?"
    assert pinned_command("python -m bench.ablate --quick", f"{DEFAULT_PRESET}-quick") == "python -m bench.ablate --quick"
    assert pinned_command("python -m bench.ablate --quick", "synth-cpu-quick") == \
        "python -m bench.ablate --preset synth-cpu --quick"
    assert pinned_command("python -m studies run ladder --trials 4", "synth-cpu") == \
        "python -m studies run ladder --preset synth-cpu --trials 4"


def test_regenerate_command_names_every_non_default_it_needs():
    from bench.reporting.report import regenerate_command
    from bench.spine.presets import DEFAULT_PRESET

    assert regenerate_command(DEFAULT_PRESET, "ladder") == "python -m bench.report"
    # a stem of its own under the default preset (a rung-1 run on a fresh draw): the name travels too
    assert regenerate_command(DEFAULT_PRESET, "draw1-rung1", "1", "abc") == \
        "python -m bench.report --name draw1-rung1 --data-seed 1 --run-id abc"
    assert regenerate_command("synth-refcoco", "ladder") == "python -m bench.report --preset synth-refcoco"
    assert regenerate_command("synth-refcoco", "x", "2") == \
        "python -m bench.report --preset synth-refcoco --name x --data-seed 2"


def test_ablate_announces_what_it_will_train_and_about_how_long(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from bench.spine import presets as P
    from bench.spine.ablate import announce
    from bench.spine.tracking import MemoryTracker
    from bench.spine.variant import run_identity
    from risclip.config import Components

    preset = P.get_preset("synthref")
    tracker = MemoryTracker()
    ctx = SimpleNamespace(force=False, tuned={}, tracker=tracker, preset=preset, fingerprint="fp", protocols=("ours",),
                          stage1_cache=lambda: tmp_path / "stage1")
    adapters = Components.from_names("adapters")
    done = tracker.start("v", {"run_hash": run_identity(preset, adapters, 0, "fp")[1]})
    tracker.end(done)
    jobs = [(adapters, s) for s in (0, 1, 2)]
    text = announce(ctx, jobs, (1.0, 3.0))
    assert text.startswith("3 runs: 2 to train, 1 reused from the store")
    assert "about 8-18 min before the table" in text and "1x, 3x rung 1's training time for each of 3 seeds" in text
    assert "(6 runs: 6 to train; about 12 times rung 1's training" in text
    # the reference runs the store holds are counted as reused (their identity does not wait for rung 1's time)
    from bench.spine.reference import reference_hash

    for m, s in ((1.0, 0), (3.0, 0), (3.0, 2)):
        tracker.end(tracker.start("r", {"run_hash": reference_hash(ctx, m, s)}))
    assert "(6 runs: 3 to train, 3 reused from the store; about 5 times rung 1's training" in announce(ctx, jobs, (1.0, 3.0))
    for m, s in ((1.0, 1), (1.0, 2), (3.0, 1)):
        tracker.end(tracker.start("r", {"run_hash": reference_hash(ctx, m, s)}))
    assert "(6 runs: 0 to train, 6 reused from the store; nothing to train;" in announce(ctx, jobs, (1.0, 3.0))
    # beside a rung 1 that --set trains three times as long, the preset's references are not reused: the budget
    # ("1x rung 1's time") is another one
    longer = SimpleNamespace(**{**vars(ctx), "overrides": "train.stage1_epochs=6"})
    assert reference_hash(longer, 1.0, 0) != reference_hash(ctx, 1.0, 0)
    both = [SimpleNamespace(**{**vars(ctx), "overrides": o}) for o in ("a.x=1;train.stage1_epochs=6", "train.stage1_epochs=6;a.x=1")]
    assert reference_hash(both[0], 1.0, 0) == reference_hash(both[1], 1.0, 0)  # the order of --set is not an identity
    assert "(6 runs: 6 to train; about 12 times" in announce(longer, jobs, (1.0, 3.0))
    assert "reference" not in announce(ctx, [(Components.from_names("adapters,cfe"), 0)], (1.0, 3.0))
    one = announce(ctx, [(adapters, 0)], (3.0,))  # singular where there is one
    assert one.startswith("1 run: ") and "for each of 1 seed (1 run: 0 to train" in one
    # a budget sweep's 3x point (stage-1 epochs x 3) says three times the minutes, not the preset's 1x
    tripled = SimpleNamespace(**{**vars(ctx), "preset": P.override(preset, ["train.stage1_epochs=6"])})
    assert "12-27 min on a 2-core CPU at 3x its stage-1 budget, so about 36-81 min" in announce(tripled, jobs, ())
    # half the train sentences (the preset caps none): half the minutes, the split counted to know what half is
    import bench.spine.ablate as ablate_module

    monkeypatch.setattr(ablate_module, "train_sentences", lambda p: 8944)
    halved = SimpleNamespace(**{**vars(ctx), "preset": P.override(preset, ["data.max_train_samples=4472"])})
    assert "2-4 min on a 2-core CPU at 0.5x its stage-1 budget" in announce(halved, jobs, ())
    quiet = SimpleNamespace(**{**vars(ctx), "preset": P.quick(preset)})
    assert "min" not in announce(quiet, jobs, ())  # quick presets carry no estimate


def test_ablate_announces_a_decoder_rung_on_a_cached_stage_1_as_its_stage_2_alone(tmp_path):
    """Rung 4 beside rung 3 trains stage 2 alone (a few minutes), not a whole run: the wait says so, whether
    rung 3 trains first in the same invocation or its stage 1 is in the cache already."""
    import dataclasses
    from types import SimpleNamespace

    from bench.spine import presets as P
    from bench.spine.ablate import announce
    from bench.spine.tracking import MemoryTracker
    from risclip.config import LADDER
    from risclip.engine import stage1_path

    preset = P.get_preset("synthref")
    lo, hi = preset.run_minutes
    d = preset.decoder_minutes
    assert d and d < hi  # measured, and cheaper than the slowest whole run (what rung 4 was counted as)
    ctx = SimpleNamespace(force=False, tuned={}, tracker=MemoryTracker(), preset=preset, fingerprint="fp",
                          protocols=("ours",), stage1_cache=lambda: tmp_path / "stage1")
    rung3, rung4 = LADDER[3], LADDER[4]
    both = announce(ctx, [(rung3, 0), (rung3, 1), (rung4, 0), (rung4, 1)], ())
    assert f"about {d:.0f} min (2 here), so about {2 * lo + 2 * d:.0f}-{2 * hi + 2 * d:.0f} min before" in both
    # rung 4 on its own, nothing cached: a whole run
    alone = announce(ctx, [(rung4, 0)], ())
    assert "decoder alone" not in alone and f"so about {lo:.0f}-{hi:.0f} min before" in alone
    # its stage 1 in the cache (rung 3 trained it in an earlier invocation): stage 2 alone; another seed's is not
    path = stage1_path(tmp_path / "stage1", preset.model.with_components(rung4),
                       dataclasses.replace(preset.train, seed=0), preset.data)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert f"(1 here), so about {d:.0f} min before" in announce(ctx, [(rung4, 0)], ())
    assert "decoder alone" not in announce(ctx, [(rung4, 1)], ())
    # a preset that does not record it counts every run whole
    unmeasured = SimpleNamespace(**{**vars(ctx), "preset": dataclasses.replace(preset, decoder_minutes=0.0)})
    assert "decoder alone" not in announce(unmeasured, [(rung3, 0), (rung4, 0)], ())
