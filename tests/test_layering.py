"""The house rules of imports, read from the source (every import statement, including ones inside
functions): the model library never imports the harness, and no package's modules import each other in
a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ("bench", "studies", "mlflow", "optuna")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in ``path`` names (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # "from pkg import module"
    return out


def graph(package: str) -> dict[str, set[str]]:
    files = sorted((ROOT / package).rglob("*.py"))
    names = {module_name(f) for f in files}
    return {module_name(f): {m for m in imports_of(f) if m in names and m != module_name(f)} for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Circles of the directed graph (one path per strongly connected component larger than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_the_library_never_imports_the_harness():
    for f in sorted((ROOT / "risclip").rglob("*.py")):
        bad = sorted(m for m in imports_of(f) if m.split(".")[0] in HARNESS)
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_no_import_circle_in_the_library_or_the_harness():
    for package in ("risclip", "bench", "studies"):
        g = graph(package)
        # a package's __init__ naming its own modules is not a circle of the code
        g = {k: {m for m in v if not k.startswith(m + ".")} for k, v in g.items()}
        assert not cycles(g), f"{package}: import circles {cycles(g)}"


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# bench's rooms, lowest first: a module imports only from its own room and the rooms below it; the
# command entry points (bench/<command>.py) and the benchmark suite stand above every room. Rendering
# (bench.reporting) reads JSON and MLflow runs; experiments that train models to answer one question
# (bench.experiments) stand above it, as they render what they measured
BENCH_LEVELS = {"bench.infra": 0, "bench.proxy": 0, "bench.costs": 0, "bench.spine": 1, "bench.reporting": 2,
                "bench.experiments": 3}
# what trains or pre-trains a model: the rendering room imports none of it
TRAINERS = ("risclip.engine", "risclip.reference", "bench.spine.ablate", "bench.spine.variant",
            "bench.spine.reference", "bench.proxy.pretrain_clip", "torch.optim")


def room(module: str) -> str | None:
    return next((r for r in BENCH_LEVELS if module == r or module.startswith(r + ".")), None)


def test_bench_rooms_import_only_downwards():
    g = graph("bench")
    for mod, deps in g.items():
        here = room(mod)
        if here is None:
            continue
        for d in deps:
            there = room(d)
            assert there is not None, f"{mod} imports {d}, which stands above every room"
            assert there == here or BENCH_LEVELS[there] < BENCH_LEVELS[here], f"{mod} ({here}) imports {d} ({there})"


def test_every_bench_module_lives_in_a_room_or_is_a_thin_entry_point():
    for f in sorted((ROOT / "bench").glob("*.py")):
        if f.name == "__init__.py":
            continue
        deps = {m for m in imports_of(f) if m.startswith("bench")}
        assert len(f.read_text().splitlines()) <= 10 and len({room(d) for d in deps}) == 1, (
            f"{f.relative_to(ROOT)} should be a thin entry point into one room")


def test_no_library_file_over_400_lines():
    """Small modules with one job each: a risclip/ file that outgrows 400 lines is split by job."""
    long = {str(f.relative_to(ROOT)): n for f in sorted((ROOT / "risclip").rglob("*.py"))
            if (n := len(f.read_text().splitlines())) > 400}
    assert not long, f"split these by job: {long}"


def test_the_rendering_room_trains_nothing():
    for mod in graph("bench"):
        if room(mod) == "bench.reporting":
            for f in (ROOT / (mod.replace(".", "/") + ".py"), ROOT / mod.replace(".", "/") / "__init__.py"):
                if f.is_file():
                    trains = sorted(d for d in imports_of(f) if d.startswith(TRAINERS))
                    assert not trains, f"{mod} renders reports but imports {trains}: it belongs in bench.experiments"
