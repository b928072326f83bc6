"""Presets as data: one flat file each, current or archived, with the run identities they always had."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.spine import ablate
from bench.spine import presets as P

# (model, train, data) config hashes of every preset: a preset file that changes a number changes its hash
HASHES = {
    "paper-b": ("d1c6195d77ae708b", "5df8c5183b358061", "dcd018c31406f208"),
    "paper-l": ("3e77928fbeba78cf", "5df8c5183b358061", "dcd018c31406f208"),
    "synth-cpu": ("4dc8585b7b2f389b", "64defeb36d2f47bd", "2ea78eb97b2490e5"),
    "synth-refcoco": ("f870da66dc15cfd3", "64defeb36d2f47bd", "15d0e998e2202082"),
    "synth-refcoco-dense": ("04d707e22cbea741", "64defeb36d2f47bd", "15d0e998e2202082"),
    "synth-refcoco-grounded": ("04d707e22cbea741", "d598323657694d62", "42c7d088650da92d"),
    "synth-refcoco-grounded-wide-test": ("04d707e22cbea741", "d598323657694d62", "c80d6dc667220998"),
    "synth-refcoco-grounded-all-train": ("04d707e22cbea741", "c15c7e24e34d9bee", "80b6a1cec6243cf5"),
    "synthref": ("04d707e22cbea741", "c15c7e24e34d9bee", "e2cfc36748c98c7f"),
}


def test_every_preset_is_one_file_with_its_identity():
    assert set(P.PRESETS) == set(HASHES) == {p.stem for p in P.PRESET_DIR.glob("*.toml")}
    for name, want in HASHES.items():
        p = P.get_preset(name)
        assert p.name == name and p.status in P.PRESET_STATUSES
        assert (p.model.config_hash(), p.train.config_hash(), p.data.config_hash()) == want, name
    assert P.get_preset(P.DEFAULT_PRESET).status == "current"
    assert set(P.CURRENT_PRESETS) == {"synthref", "paper-b", "paper-l"}


def test_no_preset_is_built_from_another():
    """Presets are data: the module that reads them defines none by chaining dataclasses.replace."""
    source = Path(P.__file__).read_text()
    assert not re.search(r"def _synth|def _paper|PRESETS = \{", source)


def test_a_bad_preset_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.toml"
    bad.write_text('name = "x"\nstatus = "current"\ndescription = "d"\n[model]\nwidth = 3\n')
    with pytest.raises(ValueError, match="unknown ModelConfig fields width"):
        P.load_preset(bad)
    bad.write_text('name = "y"\nstatus = "current"\ndescription = "d"\n')
    with pytest.raises(ValueError, match="not a preset file"):
        P.load_preset(bad)
    bad.write_text('name = "x"\nstatus = "current"\ndescription = "d"\ndecoder_minutes = -1\n[model]\n[train]\n[data]\n')
    with pytest.raises(ValueError, match="decoder_minutes must be"):
        P.load_preset(bad)


def test_readme_table_and_help_name_the_real_presets_and_default():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- presets:start -->\n")[1].split("\n<!-- presets:end -->")[0]
    assert block == P.readme_table()
    help_text = " ".join(ablate.build_parser().format_help().split())
    assert f"{P.DEFAULT_PRESET} (default)" in help_text
    listed = help_text.split("--preset NAME")[-1].split("Archived presets")[0]
    assert all(n in listed for n in P.CURRENT_PRESETS)
    assert "synth-refcoco-grounded-all-train:" not in listed  # archived: named, not offered
    assert P.get_preset("synth-cpu").status == "archived"  # and still runs when named
    assert "(default)" not in readme.replace(f"`{P.DEFAULT_PRESET}` (default)", "")


def test_what_a_preset_runs_by_default_is_its_data(tmp_path):
    """The from-scratch reference costs about four times rung 1 a seed: SynthRef runs it, the paper presets
    do not unless asked, and --help says so for each."""
    assert P.get_preset("synthref").reference == (1.0, 3.0)
    assert P.get_preset("paper-b").reference == () and P.get_preset("paper-l").reference == ()
    help_text = " ".join(ablate.build_parser().format_help().split())
    assert "paper-b: none" in help_text and "synthref: 1x, 3x rung 1's time" in help_text
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nstatus = "current"\ndescription = "x"\nreference = [0]\n')
    with pytest.raises(ValueError, match="positive multiples"):
        P.load_preset(bad)
