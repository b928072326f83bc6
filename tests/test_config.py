import subprocess
import sys

import pytest

from risclip.config import COMPONENT_NAMES, LADDER, Components, ModelConfig, TrainConfig


def test_from_names_turns_value_on_unless_switched_off():
    c = Components.from_names("adapters,cfe")
    assert (c.value, c.adapters, c.cfe, c.ske, c.decoder) == (True, True, True, False, False)
    assert Components.from_names("none") == Components()
    assert Components.from_names("none").names() == ["value"]
    assert Components.from_names("-value,decoder") == Components(value=False, decoder=True)
    assert str(c) == "value+adapters+cfe"
    assert str(Components(value=False)) == "plain-tokens"


def test_unknown_component_lists_valid_names():
    with pytest.raises(ValueError) as e:
        Components.from_names("adapters,cfe2")
    msg = str(e.value)
    assert "cfe2" in msg and all(n in msg for n in COMPONENT_NAMES)


def test_ladder_is_cumulative_and_all_combinations_are_32():
    assert len(LADDER) == 5
    for lower, upper in zip(LADDER, LADDER[1:]):
        assert set(lower.names()) < set(upper.names())
    assert LADDER[-1] == Components.from_names("all")
    combos = Components.all_combinations()
    assert len(combos) == 32 == len(set(combos))
    assert combos[0] == LADDER[0]


def test_config_hash_is_stable_and_sensitive():
    a = ModelConfig.tiny(components="adapters")
    assert a.config_hash() == ModelConfig.tiny(components="adapters").config_hash()
    assert a.config_hash() != ModelConfig.tiny(components="adapters,cfe").config_hash()
    assert a.config_hash() != ModelConfig.tiny(components="adapters", adapter_dim=8).config_hash()
    assert TrainConfig(seed=1).config_hash() != TrainConfig(seed=2).config_hash()
    code = "from risclip.config import ModelConfig; print(ModelConfig.tiny(components='adapters').config_hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == a.config_hash()


def test_value_path_by_name_and_configs_written_before_it():
    from risclip.config import ModelConfig

    assert (ModelConfig().value_residual, ModelConfig().value_mlp) == (True, True)  # MaskCLIP's, the default
    clear = ModelConfig(value_path="clearclip")
    assert (clear.value_residual, clear.value_mlp) == (False, False)
    with pytest.raises(ValueError, match="valid: maskclip, clearclip"):
        ModelConfig(value_path="maskclip2")
    old = {k: v for k, v in clear.to_dict().items() if k != "value_path"}
    assert ModelConfig.from_dict({**old, "value_residual": False, "value_mlp": False}) == clear
    with pytest.raises(ValueError, match="no named value path"):
        ModelConfig.from_dict({**old, "value_residual": True, "value_mlp": False})
