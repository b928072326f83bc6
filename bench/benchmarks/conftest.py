"""Options of the cost benchmarks: which shapes and which extra variants to measure."""

from __future__ import annotations

import os
import time

import pytest
import torch

from bench.costs.costs import CLIP, PATHS, RUNG_VARIANTS, SHAPES
from bench.costs.loader import LOADER_WORKERS
from risclip import registry
from risclip.config import Components


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("risclip benchmarks")
    g.addoption("--shapes", default=",".join(SHAPES), help=f"comma-separated shapes (default: {','.join(SHAPES)})")
    g.addoption("--variant", action="append", default=[],
                help="an extra variant to measure, by component names (e.g. adapters,decoder); repeatable")
    g.addoption("--plugin", action="append", default=[], metavar="MODULE",
                help="import MODULE so that it registers its components (docs/extending.md); each plug-in it "
                     "registers is measured on top of the full model (every built-in and the plug-in); repeatable")
    g.addoption("--bench-device", default="cpu", help="cpu or cuda (default cpu)")
    g.addoption("--bench-autocast", action="store_true", help="bf16 autocast (CUDA only)")
    g.addoption("--bench-variants", default=None,
                help="measure only these variants, ';'-separated (clip; component names as in --variant), instead "
                     "of the frozen CLIP and the ladder's rungs")
    g.addoption("--bench-deadline", type=float, default=None, metavar="SECONDS",
                help="start no benchmark after this many seconds of the session; the ones done are saved (the GPU "
                     "check's parts use it to end within their time)")
    g.addoption("--bench-paths", default="fused,eager",
                help=f"how the models run, comma-separated of {', '.join(PATHS)} (default fused,eager: the fused "
                     "kernels and the old path side by side; compiled adds torch.compile, its compile time apart)")
    g.addoption("--bench-compile-mode", default=None,
                help="torch.compile mode for the compiled path (default: reduce-overhead, i.e. CUDA graphs, for "
                     "inference on CUDA; default otherwise)")


_START = time.monotonic()
_PLUGIN_VARIANTS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    try:
        names = registry.load_plugins(config.getoption("--plugin"))
    except registry.RegistryError as e:
        raise pytest.UsageError(str(e)) from None
    _PLUGIN_VARIANTS[:] = [str(Components.from_names([*registry.builtin_names(), n])) for n in names]


def _paths(config: pytest.Config) -> list[str]:
    paths = [p.strip() for p in config.getoption("--bench-paths").split(",") if p.strip()]
    bad = [p for p in paths if p not in PATHS]
    if bad or not paths:
        raise pytest.UsageError(f"unknown --bench-paths {bad}; valid: {', '.join(PATHS)}")
    return paths


def pytest_runtest_setup(item: pytest.Item) -> None:
    deadline = item.config.getoption("--bench-deadline")
    if deadline is not None and time.monotonic() - _START > deadline:
        pytest.exit(f"--bench-deadline {deadline:.0f} s reached; the benchmarks done so far are saved", returncode=0)


def _variants(config: pytest.Config) -> list[str]:
    only = config.getoption("--bench-variants")
    if only:
        chosen = [v.strip() for v in only.split(";") if v.strip()]
        return [v if v == CLIP else str(Components.from_names(v)) for v in chosen]
    extra = [str(Components.from_names(v)) for v in config.getoption("--variant")]
    return list(dict.fromkeys([CLIP, *RUNG_VARIANTS, *_PLUGIN_VARIANTS, *extra]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    shapes = [s.strip() for s in metafunc.config.getoption("--shapes").split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise pytest.UsageError(f"unknown --shapes {unknown}; valid: {', '.join(SHAPES)}")
    if "workers" in metafunc.fixturenames:
        kind = metafunc.config.getoption("--bench-device").split(":")[0]
        metafunc.parametrize("workers", [w for w in LOADER_WORKERS.get(kind, (0,)) if w <= (os.cpu_count() or 1)])
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", shapes)
    if "variant" in metafunc.fixturenames:
        variants = _variants(metafunc.config)
        paths = _paths(metafunc.config)
        if metafunc.function.__name__ == "test_train_step":
            # (variant, stage) pairs that train something: stage 1 (adapters, CFE, SKE), stage 2 (the decoder);
            # the frozen CLIP and rung 0 train nothing
            pairs = []
            for v in variants:
                c = None if v == CLIP else Components.from_names(v)
                if c is not None and c.trains_stage(1):
                    pairs += [(v, 1, p) for p in paths]
                if c is not None and c.trains_stage(2):
                    pairs += [(v, 2, p) for p in paths]
            metafunc.parametrize("variant,stage,path", pairs)
        else:
            # the frozen CLIP is open_clip's own forward: the same under "eager" and "fused", so measured once
            pairs = [(v, p) for v in variants for p in paths if not (v == CLIP and p == "eager" and "fused" in paths)]
            metafunc.parametrize("variant,path", pairs)


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    d = torch.device(pytestconfig.getoption("--bench-device"))
    if d.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda, but CUDA is not available")
    return d


@pytest.fixture(scope="session")
def bench_paths(pytestconfig) -> list[str]:
    return _paths(pytestconfig)


@pytest.fixture(scope="session")
def compile_mode(pytestconfig):
    return pytestconfig.getoption("--bench-compile-mode")


@pytest.fixture(scope="session")
def autocast(pytestconfig, device) -> bool:
    return bool(pytestconfig.getoption("--bench-autocast")) and device.type == "cuda"


def pytest_benchmark_update_machine_info(config, machine_info):
    """Name the GPU in the saved JSON, so that the report says which card gave the figures."""
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name(0)
