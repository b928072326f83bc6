"""The component registry and plug-ins: the five built-ins declared once and unchanged; a component written in a
folder outside the package is ablated with the controls, crossed in a factorial and profiled for its costs, with
no file of risclip/, bench/ or studies/ changed; a bad plug-in is a one-line error."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from risclip import registry
from risclip.config import COMPONENT_NAMES, LADDER, Components, ModelConfig
from risclip.model import RISCLIP

ROOT = Path(__file__).resolve().parent.parent

# a plug-in as a researcher would write it, in a folder of their own: a gate on the patch map, conditioned on the
# sentence (it acts at a hook point, trains in stage 1, and has one setting)
PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from risclip.registry import PATCH_STAGE, ComponentSpec, register


@dataclass(frozen=True)
class GateConfig:
    dim: int = 16


class Gate(nn.Module):
    def __init__(self, embed_dim, dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, dim), nn.GELU(), nn.Linear(dim, 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def patch_map(self, logits, ctx):
        scale, shift = self.net(ctx.sentence.float()).unbind(-1)
        return logits * (1 + scale[:, None, None]) + shift[:, None, None]


register(ComponentSpec(name="gate", stage=PATCH_STAGE, acts_at="patch_map", config=GateConfig, origin=__name__,
                       build=lambda model, s: Gate(model.embed_dim, s.dim), summary="a sentence-conditioned gate"))
'''


@pytest.fixture()
def plugin_dir(tmp_path):
    d = tmp_path / "my_lab"
    d.mkdir()
    (d / "gate_plugin.py").write_text(PLUGIN)
    return d


@pytest.fixture()
def gate(plugin_dir, monkeypatch):
    """The plug-in registered in this process for one test, then removed (the registry is process-wide)."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    assert registry.load_plugin("gate_plugin") == ["gate"]
    yield "gate"
    registry.unregister("gate")
    sys.modules.pop("gate_plugin", None)


def test_the_builtins_are_declared_once_in_ladder_order():
    specs = [s for s in registry.specs() if s.builtin]
    assert tuple(s.name for s in specs) == COMPONENT_NAMES
    assert {s.name: s.origin for s in specs} == {"value": "risclip.grounding", "adapters": "risclip.adapters",
                                                 "cfe": "risclip.cfe", "ske": "risclip.ske",
                                                 "decoder": "risclip.decoder"}
    assert [s.stage for s in specs] == [None, 1, 1, 1, 2]
    assert [str(c) for c in LADDER] == ["value", "value+adapters", "value+adapters+cfe", "value+adapters+cfe+ske",
                                        "value+adapters+cfe+ske+decoder"]
    assert registry.stage_groups(1) == {"adapters": ("vision_adapters", "text_adapters"), "cfe": ("cfe",),
                                        "ske": ("ske",)}
    assert registry.stage_groups(2) == {"decoder": ("decoder",)}
    # a config without plug-ins says nothing of them: every earlier hash stands (tests/test_identity.py pins them)
    d = ModelConfig.tiny(components="adapters").to_dict()
    assert "plugins" not in d and "plugin_config" not in d and "extra" not in d["components"]


def test_a_bad_plugin_is_a_clear_error(tmp_path, capsys):
    from bench.spine import ablate

    bad = {"hook.py": "from risclip.registry import ComponentSpec, register\n"
                      "register(ComponentSpec(name='x1', stage=1, acts_at='nowhere', build=lambda m, s: None))\n",
           "clash.py": "from risclip.registry import ComponentSpec, register\n"
                       "register(ComponentSpec(name='cfe', stage=1, acts_at='fusion', build=lambda m, s: None))\n",
           "broken.py": "import not_a_module_anywhere\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    for name, message in (("hook.py", "unknown hook point 'nowhere'; valid: vision_block"),
                          ("clash.py", "component 'cfe' is already registered (by risclip.cfe)"),
                          ("broken.py", "cannot import it (ModuleNotFoundError"),
                          ("missing_module_xyz", "cannot import it (ModuleNotFoundError")):
        target = str(tmp_path / name) if name.endswith(".py") else name
        assert ablate.main(["--plugin", target, "--components", "adapters", "--describe-preset"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert ablate.main(["--components", "adapters,gate_that_is_not_loaded"]) == 2
    assert "--plugin MODULE" in capsys.readouterr().err


def test_a_plugin_acts_at_its_hook_point_trains_in_its_stage_and_carries_its_settings(gate):
    cfg = ModelConfig.tiny(components="adapters,gate")
    assert cfg.components.extra == ("gate",) and str(cfg.components) == "value+adapters+gate"
    assert cfg.to_dict()["plugins"] == {"gate": {"dim": 16}}
    wide = cfg.with_plugin_setting("gate", "dim", 32)
    assert wide.config_hash() != cfg.config_hash() and ModelConfig.from_dict(wide.to_dict()) == wide
    with pytest.raises(ValueError, match="no setting width"):
        cfg.with_plugin_setting("gate", "width", 3)
    torch.manual_seed(0)
    model = RISCLIP.from_config(cfg)
    assert set(model.stage_parameter_groups(1)) == {"adapters", "gate", "map"}
    assert model.stage_state_dict(1).keys() >= {"plugins.gate.net.0.weight"}
    images, tokens = torch.randn(1, 3, 96, 96), torch.randint(1, 100, (2, 24))
    base = RISCLIP.from_config(ModelConfig.tiny(components="adapters"))
    base.load_state_dict(model.state_dict(), strict=False)
    # zero-initialised: the plug-in starts as the identity
    assert torch.allclose(model(images, tokens).patch_logits, base(images, tokens).patch_logits)
    with torch.no_grad():
        model.plugins["gate"].net[-1].bias.fill_(0.5)
    assert not torch.allclose(model(images, tokens).patch_logits, base(images, tokens).patch_logits)
    assert Components.from_names("all").on("gate") and len(Components.all_combinations()) == 64


@pytest.mark.slow
def test_an_outside_plugin_gets_the_ablation_the_factorial_and_the_costs(plugin_dir, quick_root, tmp_path):
    """With nothing of the package changed: a quick ablate of it (with the text controls; its hash moves with its
    setting), a two-factor quick factorial with it, and a quick cost benchmark of it."""
    before = subprocess.run(["git", "status", "--porcelain", "risclip", "bench", "studies"], cwd=ROOT,
                            capture_output=True, text=True).stdout
    env = dict(os.environ, PYTHONPATH=str(plugin_dir), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(*argv, timeout=900):
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        return r

    common = ["--plugin", "gate_plugin", "--quick", "--data-root", str(quick_root), "--tracking-uri", uri,
              "--workdir", str(tmp_path / "runs"), "--no-progress", "--reference", "", "--no-baselines"]
    run("-m", "bench.ablate", *common, "--components", "adapters,gate", "--set", "gate.dim=8",
        "--output", str(tmp_path / "a.json"))
    rows = json.loads((tmp_path / "a.json").read_text())
    row = next(r for r in (rows["rows"] if isinstance(rows, dict) else rows) if r["kind"] == "variant")
    assert row["components"] == "value+adapters+gate"
    assert math.isfinite(row["swap_mIoU"]) and math.isfinite(row["generic_mIoU"])  # the controls ran
    # its identity moves with its setting (the same function the run above was hashed by)
    sys.path.insert(0, str(plugin_dir))
    try:
        registry.load_plugin("gate_plugin")
        from bench.spine import presets as P
        from bench.spine.assets import data_fingerprint, ensure_backbone
        from bench.spine.variant import run_identity

        p, _ = ensure_backbone(P.build(P.DEFAULT_PRESET, quick=True, data_root=str(quick_root)), False, None)
        comp, fp = Components.from_names("adapters,gate"), data_fingerprint(p)
        assert row["config_hash"] == run_identity(P.override(p, ["gate.dim=8"]), comp, 0, fp)[1]
        assert row["config_hash"] != run_identity(P.override(p, ["gate.dim=16"]), comp, 0, fp)[1]
    finally:
        registry.unregister("gate")
        sys.modules.pop("gate_plugin", None)
        sys.path.remove(str(plugin_dir))

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = ["--plugin", "gate_plugin", "--quick", "--data-root", str(quick_root), "--storage", storage,
             "--tracking-uri", uri, "--factors", "adapters,gate"]
    run("-m", "studies", "run", "factorial", *study, "--seeds", "0", "--workdir", str(tmp_path / "runs"),
        timeout=1500)
    run("-m", "studies", "report", "factorial", *study, "--seeds", "0", "--out-dir", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "factorial.md").read_text()
    assert "| adapters | gate | test mIoU | seeds |" in md and "gate" in md.split("Main effects")[1]

    r = run("-m", "pytest", "bench/benchmarks/test_costs.py", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
            "--shapes", "synth-cpu", "--plugin", "gate_plugin", "--bench-variants", "adapters,gate", "--bench-paths",
            "fused", "-k", "test_inference or test_train_step")
    assert " passed" in r.stdout and "failed" not in r.stdout  # latency, FLOPs and fresh-process memory of it
    after = subprocess.run(["git", "status", "--porcelain", "risclip", "bench", "studies"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    assert after == before
