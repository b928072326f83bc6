import dataclasses

import pytest
import torch

from risclip import engine
from risclip.config import DataConfig, ModelConfig, TrainConfig
from risclip.engine import (
    FunctionHook,
    NonFiniteLossError,
    checkpoint_path,
    patch_target,
    run_variant,
    warmup_cosine,
)
from risclip.losses import dice_focal_loss, dice_loss, focal_loss, spatial_ce
from risclip.metrics import get_protocol
from risclip.model import RISCLIP, RISOutput

FAST = dict(stage1_epochs=2, stage2_epochs=1, batch_size=8, eval_batch_size=16, progress=False, lr=3e-3)


@pytest.fixture()
def data(synthref_root):
    return DataConfig(data_root=str(synthref_root), max_train_samples=16, max_eval_samples=10)


def test_losses():
    target = torch.zeros(2, 8, 8)
    target[:, 2:5, 2:5] = 1
    good = (target * 2 - 1) * 20
    bad = -good
    assert dice_loss(good, target) < 0.01 < 0.9 < dice_loss(bad, target)
    assert focal_loss(good, target) < 1e-6 < focal_loss(bad, target)
    assert dice_focal_loss(torch.zeros(2, 8, 8), target) > dice_focal_loss(good, target)


def test_spatial_ce_makes_other_objects_compete_with_the_referent():
    target = torch.zeros(3, 4, 4)
    target[:, 0, 0] = 1.0
    target[2] = 0.0  # an empty target is left out, not a NaN
    uniform = torch.zeros(3, 4, 4)
    assert abs(spatial_ce(uniform, target).item() - torch.log(torch.tensor(16.0)).item()) < 1e-5
    peaked = torch.full((3, 4, 4), -20.0)
    peaked[:, 0, 0] = 20.0
    assert spatial_ce(peaked, target) < 1e-6
    # lighting a second object as bright as the referent halves the referent's share: log 2 lost,
    # whatever the background does (a per-pixel loss would charge it one pixel's error)
    two = peaked.clone()
    two[:, 3, 3] = 20.0
    assert abs(spatial_ce(two, target).item() - torch.log(torch.tensor(2.0)).item()) < 1e-4
    x = torch.zeros(1, 4, 4, requires_grad=True)
    spatial_ce(x, target[:1]).backward()
    assert x.grad[0, 0, 0] < 0 < x.grad[0, 3, 3]  # the referent goes up, every other patch down
    assert torch.isfinite(spatial_ce(uniform, torch.zeros(2, 4, 4)))


def test_spatial_ce_weight_enters_stage_one_only_and_stays_out_of_the_hash_at_zero():
    assert "spatial_ce_weight" not in TrainConfig().to_dict()
    assert TrainConfig(spatial_ce_weight=0.5).config_hash() != TrainConfig().config_hash()
    out = RISOutput(patch_logits=torch.zeros(2, 4, 4), mask_logits=torch.zeros(2, 16, 16),
                           patch_cosine=torch.zeros(2, 4, 4))
    mask = torch.zeros(2, 16, 16)
    mask[:, :4, :4] = 1
    plain, extra = TrainConfig(), TrainConfig(spatial_ce_weight=0.5)
    s1, s2 = engine.stage_rule(1, plain), engine.stage_rule(2, plain)
    added = s1.loss(out, mask, (4, 4), extra) - s1.loss(out, mask, (4, 4), plain)
    assert abs(added.item() - 0.5 * torch.log(torch.tensor(16.0)).item()) < 1e-5
    assert s2.loss(out, mask, (4, 4), extra) == s2.loss(out, mask, (4, 4), plain)


def test_patch_target_area_and_nearest():
    m = torch.zeros(1, 4, 4)
    m[0, :2, :1] = 1
    assert patch_target(m, (2, 2), "area")[0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert patch_target(m, (2, 2), "nearest")[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError):
        patch_target(m, (2, 2), "bilinear")


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.02) and f(100) == pytest.approx(0.0, abs=1e-9)


def test_rung0_is_evaluated_without_training(data, tmp_path):
    r = run_variant(ModelConfig.tiny(components="none"), TrainConfig(**FAST), data, tmp_path)
    # nothing trained: no training checkpoint, only the self-describing model file (config, map affine)
    assert r.history == [] and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert set(r.metrics) >= {"mIoU", "oIoU", "P@50"} and r.eval_samples == 10
    assert set(r.by_kind) <= {"attribute", "position", "relation"}


def test_training_is_deterministic_and_lowers_loss(data, tmp_path):
    cfg = TrainConfig(**{**FAST, "stage1_epochs": 3})
    a = run_variant(ModelConfig.tiny(components="adapters,ske,decoder"), cfg, data, tmp_path / "a")
    b = run_variant(ModelConfig.tiny(components="adapters,ske,decoder"), cfg, data, tmp_path / "b")
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.metrics == b.metrics
    stage1 = [h["loss"] for h in a.history if h["stage"] == 1]
    assert len(stage1) == 3 and stage1[-1] < stage1[0]
    assert [h["stage"] for h in a.history] == [1, 1, 1, 2]


def test_checkpoints_hold_components_only_and_load_weights_only(data, tmp_path):
    run_variant(ModelConfig.tiny(components="adapters,decoder"), TrainConfig(**FAST), data, tmp_path)
    for stage in (1, 2):
        state = torch.load(checkpoint_path(tmp_path, stage), weights_only=True)
        assert not any(k.startswith("clip.") for k in state["model"])
        assert {"optimizer", "scheduler", "epoch"} <= set(state)
    assert any(k.startswith("decoder.") for k in torch.load(checkpoint_path(tmp_path, 2), weights_only=True)["model"])


def test_interrupted_training_resumes_to_the_same_result(data, tmp_path):
    model_cfg = ModelConfig.tiny(components="adapters,cfe")
    cfg = TrainConfig(**{**FAST, "stage1_epochs": 3})
    straight = run_variant(model_cfg, cfg, data, tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop_after_first(model, stage, epoch, row):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_variant(model_cfg, cfg, data, tmp_path / "resumed", hooks=[FunctionHook(epoch_end=stop_after_first)])
    assert torch.load(checkpoint_path(tmp_path / "resumed", 1), weights_only=True)["epoch"] == 0
    seen = []
    resumed = run_variant(model_cfg, cfg, data, tmp_path / "resumed",
                          hooks=[FunctionHook(epoch_end=lambda m, s, e, r: seen.append(e))])
    assert seen == [2, 3]  # epoch 1 was not trained again
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history])
    assert resumed.metrics == pytest.approx(straight.metrics)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    model_cfg = ModelConfig.tiny(components="adapters")
    cfg = TrainConfig(**{**FAST, "stage1_epochs": 3})
    real = engine.training.dice_focal_loss

    def poison_after_epoch_one(model, stage, epoch, row):
        monkeypatch.setattr(engine.training, "dice_focal_loss", lambda *a, **k: real(*a, **k) * float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"stage 1, epoch 2.*last good checkpoint.*stage1\.pt"):
        run_variant(model_cfg, cfg, data, tmp_path, hooks=[FunctionHook(epoch_end=poison_after_epoch_one)])
    state = torch.load(checkpoint_path(tmp_path, 1), weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_stage1_cache_gives_the_same_weights_as_training(data, tmp_path):
    """Rung 4 may reuse rung 3's stage 1: both must train identical stage-1 weights."""
    from risclip.engine import stage1_key
    from risclip.model import RISCLIP

    train = TrainConfig(seed=5, **{**FAST, "stage1_epochs": 1})
    without = ModelConfig.tiny(components="adapters,cfe")
    with_dec = ModelConfig.tiny(components="adapters,cfe,decoder")
    assert stage1_key(without, train, data) == stage1_key(with_dec, train, data)
    assert stage1_key(without, TrainConfig(seed=6, **FAST), data) != stage1_key(without, train, data)
    grabbed = {}

    def grab(name):
        def trained(model: RISCLIP):
            grabbed[name] = {k: v.clone() for k, v in model.stage_state_dict(1).items()}
        return [FunctionHook(trained=trained)]

    cache = tmp_path / "s1"
    r1 = run_variant(without, train, data, hooks=grab("a"), stage1_cache=cache, evaluate_val=False)
    r2 = run_variant(with_dec, train, data, hooks=grab("b"), stage1_cache=cache, evaluate_val=False)
    r3 = run_variant(with_dec, train, data, hooks=grab("c"), evaluate_val=False)  # trains its own stage 1
    assert not r1.stage1_reused and r2.stage1_reused and not r3.stage1_reused
    assert grabbed["a"].keys() == grabbed["c"].keys()
    for k in grabbed["a"]:
        assert torch.equal(grabbed["a"][k], grabbed["b"][k]) and torch.equal(grabbed["a"][k], grabbed["c"][k]), k
    assert r2.metrics == r3.metrics


def test_component_learning_rate_scales(data):
    """``cfe_lr_scale=0`` leaves CFE where it started while the adapters and SKE still learn."""
    mc = ModelConfig.tiny(components="adapters,cfe,ske")
    torch.manual_seed(0)
    model = RISCLIP.from_config(mc)
    groups = model.stage_parameter_groups(1)
    assert set(groups) == {"adapters", "cfe", "ske", "map"}
    flat = [id(p) for ps in groups.values() for p in ps]
    assert sorted(flat) == sorted(id(p) for p in model.stage_parameters(1)) and len(flat) == len(set(flat))
    own = [p for name, p in model.named_parameters() if not name.startswith("clip.")]  # no decoder in this variant
    assert sorted(flat) == sorted(id(p) for p in own)
    before = {k: v.clone() for k, v in model.component_state_dict().items()}
    train_set = engine.build_dataset(data, mc, data.train_split, train=True)
    cfg = TrainConfig(**{**FAST, "stage1_epochs": 1, "cfe_lr_scale": 0.0, "weight_decay": 0.0})
    engine.train_stage(model, train_set, 1, cfg, None, torch.device("cpu"))
    after = model.component_state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("cfe.") for k in moved)
    assert any(k.startswith("vision_adapters.") for k in moved) and any(k.startswith("ske.") for k in moved)


def test_stage2_from_cached_stage1_outputs_equals_recomputing_them(data, tmp_path, monkeypatch):
    """Stage 2 reads stage-1 outputs computed once per sample; with the cache's budget at zero it
    recomputes them every step as before: same losses, decoder weights and scores."""
    cfg = TrainConfig(**{**FAST, "stage2_epochs": 2})
    model_cfg = ModelConfig.tiny(components="adapters,cfe,decoder")
    cached = run_variant(model_cfg, cfg, data, tmp_path / "cached")
    monkeypatch.setattr(engine.training, "STAGE2_CACHE_BYTES", 0)
    built = []
    monkeypatch.setattr(engine.PatchLevelCache, "__init__", lambda *a, **k: built.append(1))
    fresh = run_variant(model_cfg, cfg, data, tmp_path / "fresh")
    assert not built  # the second run really recomputed
    for a, b in zip(cached.history, fresh.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa = torch.load(tmp_path / "cached" / "model.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "fresh" / "model.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
    assert cached.metrics["mIoU"] == pytest.approx(fresh.metrics["mIoU"], abs=0.05)


@pytest.mark.parametrize("components", ["adapters,ske,decoder", "adapters,cfe", "adapters,cfe,ske,decoder"])
def test_evaluation_shares_each_image_tower_pass_across_its_sentences(synthref_root, components):
    """distinct_images feeds each image once; outputs equal those of the repeated batch (and with CFE,
    whose image tower reads the text from its first fusion point on, the model repeats the image's tokens
    there itself)."""
    from risclip.data.refer import refer_collate
    from risclip.engine import build_dataset, distinct_images
    from risclip.model import RISCLIP

    data = DataConfig(data_root=str(synthref_root), max_eval_samples=24)
    mcfg = ModelConfig.tiny(components=components, image_size=64)
    ds = build_dataset(data, mcfg, "train", train=False)
    batch = refer_collate([ds[i] for i in range(len(ds))])
    images, index = distinct_images(batch)
    assert len(images) < len(ds) and torch.equal(images[index], batch["image"])
    torch.manual_seed(0)
    model = RISCLIP.from_config(mcfg)
    for p in model.stage_parameters(1):
        p.data.add_(0.05 * torch.randn_like(p))  # not the identity at init
    model.set_stage(None)
    with torch.no_grad():
        shared = model(images, batch["tokens"], index)
        repeated = model(batch["image"], batch["tokens"])
    torch.testing.assert_close(shared.mask_logits, repeated.mask_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(shared.patch_cosine, repeated.patch_cosine, rtol=1e-4, atol=1e-5)


def test_loader_workers_persist_across_epochs_and_change_nothing(data, tmp_path):
    """One training loader per stage with a persistent worker gives the history and metrics of the
    in-process loader: the per-epoch order reaches the worker through the sampler."""
    base = TrainConfig(**{**FAST, "stage1_epochs": 2})
    a = run_variant(ModelConfig.tiny(components="adapters"), base, data, tmp_path / "a")
    b = run_variant(ModelConfig.tiny(components="adapters"),
                    TrainConfig(**{**FAST, "stage1_epochs": 2, "num_workers": 1, "prefetch_factor": 2}),
                    data, tmp_path / "b")
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.metrics == b.metrics


def test_loader_options_and_runtime_fields_stay_out_of_the_identity(data):
    cpu = torch.device("cpu")
    assert engine.loader_options(TrainConfig(), cpu) == {"num_workers": 0, "pin_memory": False}
    opts = engine.loader_options(TrainConfig(num_workers=3, prefetch_factor=2), torch.device("cuda"))
    assert opts == {"num_workers": 3, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    # earlier runs keep their hash; the loader settings do not change the stage-1 identity
    assert "compile" not in TrainConfig().to_dict() and "pin_memory" not in TrainConfig().to_dict()
    m = ModelConfig.tiny(components="adapters")
    assert engine.stage1_key(m, TrainConfig(), data) == engine.stage1_key(
        m, TrainConfig(pin_memory=True, persistent_workers=False, prefetch_factor=8), data)
    assert TrainConfig(compile="default").config_hash() != TrainConfig().config_hash()
    with pytest.raises(ValueError, match="unknown compile"):
        TrainConfig(compile="fast")
    assert engine.compile_for(None, TrainConfig(), None) == 0.0  # off: nothing compiled, no time


def test_threshold_from_val_scores_test_at_the_best_val_cut(data, tmp_path):
    """The cut is chosen on val from one pass (every VAL_CUTS scored), used on test and for the text
    controls, the protocol's own 0.5 kept as protocol 'fixed'; the weights are those of a fixed-cut run."""
    assert "threshold_from_val" not in TrainConfig().to_dict()
    cfg = ModelConfig.tiny(components="adapters")
    fixed = run_variant(cfg, TrainConfig(**FAST), data, workdir=tmp_path / "a", text_controls=True)
    tuned = run_variant(cfg, TrainConfig(**FAST, threshold_from_val=True), data, workdir=tmp_path / "b",
                        text_controls=True)
    assert fixed.threshold == 0.5 and not fixed.val_cuts and "fixed" not in fixed.protocol_metrics
    assert set(tuned.val_cuts) == set(engine.VAL_CUTS)
    best = max(tuned.val_cuts.values())
    assert tuned.val_cuts[tuned.threshold] == best and tuned.val_metrics["mIoU"] == pytest.approx(best)
    # same weights: the fixed-cut run's test metrics reappear under protocol 'fixed'
    assert tuned.protocol_metrics["fixed"]["mIoU"] == pytest.approx(fixed.metrics["mIoU"], abs=1e-6)
    if tuned.threshold != 0.5 and best > fixed.val_metrics["mIoU"]:
        assert tuned.metrics != fixed.metrics
    # the cut matters and is read at the cut: scoring test at each cut by hand gives the chosen metrics
    torch.manual_seed(0)  # the tiny CLIP is random: the same draw as run_variant's (seed 0)
    model = engine.load_checkpoint(tuned.checkpoint)
    test = engine.build_dataset(data, cfg, data.test_split, train=False)
    proto = dataclasses.replace(get_protocol("ours"), threshold=tuned.threshold)
    by_hand = engine.evaluate(model, test, TrainConfig(**FAST), torch.device("cpu"), protocols=(proto,))
    assert by_hand.metrics["mIoU"] == pytest.approx(tuned.metrics["mIoU"], abs=1e-6)
    swap = engine.evaluate_text_controls(model, test, TrainConfig(**FAST), torch.device("cpu"), protocol=proto)
    assert swap["swap"]["metrics"]["mIoU"] == pytest.approx(tuned.controls["swap"]["metrics"]["mIoU"], abs=1e-6)
    # rung 0 keeps its zero-shot rule: no cut to choose
    zero = run_variant(ModelConfig.tiny(components="none"), TrainConfig(**FAST, threshold_from_val=True), data)
    assert zero.threshold is None and not zero.val_cuts



def test_stage2_max_samples_caps_the_decoder_stage_only(data, tmp_path, monkeypatch):
    from risclip.engine import stage1_key

    capped = TrainConfig(**{**FAST, "stage2_max_samples": 8})
    model_cfg = ModelConfig.tiny(components="adapters,decoder")
    # stage 1 learns the same weights with or without the cap; the cap is out of the hash at its default
    assert stage1_key(model_cfg, capped, data) == stage1_key(model_cfg, TrainConfig(**FAST), data)
    assert "stage2_max_samples" not in TrainConfig(**FAST).to_dict()
    with pytest.raises(ValueError, match="stage2_max_samples"):
        TrainConfig(stage2_max_samples=0)
    seen = {}
    real = engine.train_stage

    def spy(model, dataset, stage, *args, **kwargs):
        seen[stage] = [dataset[i]["meta"]["sent_id"] for i in range(len(dataset))]
        return real(model, dataset, stage, *args, **kwargs)

    monkeypatch.setattr(engine.run, "train_stage", spy)
    run_variant(model_cfg, capped, data, tmp_path, evaluate_val=False)
    assert len(seen[1]) == 16 and seen[2] == seen[1][:8]  # "first": the first 8 of stage 1's sentences


def test_cpu_amp_trains_in_bf16_and_stays_close_to_float32(data, tmp_path):
    seen = []

    def trained(model):
        x = torch.randn(2, 3, 96, 96)
        tokens = torch.randint(1, 40, (2, model.cfg.context_length))
        with engine.autocast_for(torch.device("cpu"), cfg):
            seen.append(model.patch_level(x, tokens).logits.dtype)

    cfg = TrainConfig(**{**FAST, "cpu_amp": True})
    assert TrainConfig(**FAST).config_hash() != cfg.config_hash()
    m = ModelConfig.tiny(components="adapters,cfe")
    bf16 = run_variant(m, cfg, data, tmp_path / "bf16", hooks=[FunctionHook(trained=trained)], evaluate_val=False)
    fp32 = run_variant(m, TrainConfig(**FAST), data, tmp_path / "fp32", evaluate_val=False)
    assert seen == [torch.bfloat16]
    losses = [(a["loss"], b["loss"]) for a, b in zip(bf16.history, fp32.history)]
    assert all(torch.isfinite(torch.tensor(a)) for a, _ in losses)
    assert all(abs(a - b) < 0.05 * b for a, b in losses), losses
    assert bf16.history[0]["loss"] != fp32.history[0]["loss"]  # bf16 really ran


@pytest.mark.parametrize("order", ["first", "spread"])
def test_limited_keeps_what_a_fresh_capped_dataset_keeps(synthref_root, order):
    from risclip.engine import build_dataset, stage2_set

    whole = DataConfig(data_root=str(synthref_root), train_subset=order)
    model_cfg = ModelConfig.tiny(components="adapters,decoder")
    stage1 = build_dataset(dataclasses.replace(whole, max_train_samples=12), model_cfg, whole.train_split, True)
    for cap in (5, 12, 10_000):
        fresh = build_dataset(dataclasses.replace(whole, max_train_samples=cap), model_cfg, whole.train_split, True)
        got = stage2_set(stage1, whole, model_cfg, TrainConfig(stage2_max_samples=cap))
        want = fresh if cap < len(stage1) else stage1  # a cap at or above stage 1's count keeps stage 1's set
        assert [(r["ref_id"], s["sent_id"]) for r, s in got.samples] == \
            [(r["ref_id"], s["sent_id"]) for r, s in want.samples]
    assert len(stage1.limited(5, order)) == 5 and len(stage1) == 12  # the copy leaves the original alone


def test_learning_curve_scores_every_epoch_and_changes_nothing_learnt(data, tmp_path):
    """With the learning curve on (the default), every epoch row holds val mIoU, its cut and per-kind mIoU;
    the weights, losses and test metrics equal a run without it, and it stays out of every identity."""
    model_cfg = ModelConfig.tiny(components="adapters,decoder")
    on = run_variant(model_cfg, TrainConfig(**FAST), data, tmp_path / "on")
    off = run_variant(model_cfg, TrainConfig(**FAST, learning_curve=False), data, tmp_path / "off")
    assert [h["loss"] for h in on.history] == [h["loss"] for h in off.history]
    assert on.metrics == off.metrics and on.threshold == off.threshold
    a, b = torch.load(on.checkpoint, weights_only=True)["model"], torch.load(off.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [(h["stage"], h["epoch"]) for h in on.history] == [(1, 1), (1, 2), (2, 1)]
    for h in on.history:
        assert 0.0 <= h["val_mIoU"] <= 100.0 and h["val_cut"] in engine.VAL_CUTS
        assert any(k.startswith("val_mIoU_") for k in h)
    assert not any(k.startswith("val_") for h in off.history for k in h)
    assert engine.stage1_key(model_cfg, TrainConfig(), data) == engine.stage1_key(
        model_cfg, TrainConfig(learning_curve=False, curve_samples=5), data)
    assert "learning_curve" not in TrainConfig().to_dict()


def test_history_table_keeps_rows_with_and_without_the_curve():
    rows = [{"stage": 1, "epoch": 1, "loss": 0.5}, {"stage": 1, "epoch": 2, "loss": 0.4, "val_mIoU": 30.0}]
    keys, table = engine.history_table(rows)
    assert keys == ["stage", "epoch", "loss", "val_mIoU"]
    assert engine.history_rows({"history_keys": keys, "history": table}) == [
        {"stage": 1.0, "epoch": 1.0, "loss": 0.5}, {"stage": 1.0, "epoch": 2.0, "loss": 0.4, "val_mIoU": 30.0}]
