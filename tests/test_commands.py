"""``python -m bench`` lists every command entry point, each with the first line of its own docstring."""

from __future__ import annotations

from pathlib import Path

from bench.infra.commands import commands, main, summary

ROOT = Path(__file__).resolve().parents[1]


def test_every_entry_point_is_listed_with_what_it_does(capsys):
    listed = dict(commands())
    entries = {f"python -m bench.{f.stem}" for f in (ROOT / "bench").glob("*.py")
               if f.name not in ("__init__.py", "__main__.py")}
    assert entries <= set(listed), entries - set(listed)
    assert all(len(what) > 10 and "``" not in what for what in listed.values()), listed
    assert main([]) == 0 and "python -m bench.capacity" in capsys.readouterr().out


def test_summary_takes_the_first_sentence_and_cuts_long_ones():
    assert summary("``python -m bench.x``: does a thing. More.\n\nBody.") == "Does a thing"
    long = summary("Word " * 40)
    assert len(long) <= 104 and long.endswith("...")
