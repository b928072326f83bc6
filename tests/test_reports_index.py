"""reports/: a generated index that is current, and no current report naming a command today's CLI rejects."""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

import pytest

from bench.reporting import index

ROOT = Path(__file__).parents[1] / "reports"


def test_the_index_is_current():
    assert (ROOT / "README.md").read_text() == index.render(ROOT), "run python -m bench.reporting.index"
    assert {p.name for p in ROOT.iterdir() if p.is_file()} == {"README.md"}  # the top level: folders and the index


class _Parsed(Exception):
    pass


def _parses(command: str, monkeypatch) -> None:
    """Parse a ``python -m MODULE ARGS`` command with MODULE's own argparse parser, running nothing."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        real(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    module = importlib.import_module(argv[2])  # every `python -m` entry point has a main(argv); a package's is
    main = getattr(module, "main", None) or importlib.import_module(f"{argv[2]}.__main__").main  # in __main__
    with pytest.raises(_Parsed):
        main(argv[3:])


def test_every_command_a_current_report_names_parses(monkeypatch):
    commands = index.current_commands(ROOT)
    for _path, command in commands:
        _parses(command, monkeypatch)
    # and the check can fail: an option today's CLI does not have
    with pytest.raises(SystemExit):
        _parses("python -m bench.report --no-such-option", monkeypatch)
