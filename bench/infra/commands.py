"""``python -m bench``: every command of the harness, one line each, read from the commands' own docstrings
(by parsing, not importing: listing them starts no torch and no MLflow)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
# commands that live outside bench/: the studies and the benchmark suite
OTHERS = (("python -m studies --help", "Optuna studies: tune, ladder, factorial, pareto (run, report, status)"),
          ("nox -s benchmark", "latency, memory and FLOPs of every variant (pytest-benchmark; bench/benchmarks)"))


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _home(entry: Path) -> Path | None:
    """The module an entry point's ``main`` comes from (``from bench.X.Y import main``)."""
    for node in ast.parse(entry.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and any(a.name == "main" for a in node.names):
            return BENCH.parent / (node.module.replace(".", "/") + ".py")
    return None


def summary(text: str, width: int = 100) -> str:
    """A docstring's first sentence, on one line, without reST markup or a leading ```python -m X`:``, cut
    at a clause (``: ``) or a word when longer than ``width``."""
    first = " ".join(text.split("\n\n")[0].split()).replace("``", "`").replace(":mod:", "")
    first = re.sub(r"^`python -m [\w.]+`: ", "", first).split(". ")[0].rstrip(".")
    if len(first) > width and ": " in first[:width]:
        first = first[:first.index(": ", 0, width)]
    if len(first) > width:
        first = first[:width].rsplit(" ", 1)[0] + " ..."
    return first[:1].upper() + first[1:]


def commands() -> list[tuple[str, str]]:
    """(command, what it does) for every ``bench/<name>.py`` entry point, then the studies and benchmarks."""
    out = []
    for entry in sorted(BENCH.glob("*.py")):
        if entry.name in ("__init__.py", "__main__.py"):
            continue
        home = _home(entry)
        if home is None or not home.is_file():
            continue
        out.append((f"python -m bench.{entry.stem}", summary(_docstring(home))))
    return out + list(OTHERS)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0]).parse_args(argv)
    rows = commands()
    width = max(len(c) for c, _ in rows)
    print("risclip-bench commands (each takes --help; README.md shows the common ones):\n")
    for command, what in rows:
        print(f"  {command:<{width}}  {what}")
    return 0
