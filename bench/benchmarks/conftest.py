"""Options of the cost benchmarks: which shapes and which extra variants to measure."""

from __future__ import annotations

import pytest
import torch

from bench.costs.costs import CLIP, RUNG_VARIANTS, SHAPES
from risclip.config import Components


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("risclip benchmarks")
    g.addoption("--shapes", default=",".join(SHAPES), help=f"comma-separated shapes (default: {','.join(SHAPES)})")
    g.addoption("--variant", action="append", default=[],
                help="an extra variant to measure, by component names (e.g. adapters,decoder); repeatable")
    g.addoption("--bench-device", default="cpu", help="cpu or cuda (default cpu)")
    g.addoption("--bench-autocast", action="store_true", help="bf16 autocast (CUDA only)")


def _variants(config: pytest.Config) -> list[str]:
    return list(dict.fromkeys([CLIP, *RUNG_VARIANTS, *config.getoption("--variant")]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    shapes = [s.strip() for s in metafunc.config.getoption("--shapes").split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise pytest.UsageError(f"unknown --shapes {unknown}; valid: {', '.join(SHAPES)}")
    if "shape" in metafunc.fixturenames:
        metafunc.parametrize("shape", shapes)
    if "variant" in metafunc.fixturenames:
        variants = _variants(metafunc.config)
        if metafunc.function.__name__ == "test_train_step":
            # (variant, stage) pairs that train something: stage 1 (adapters, CFE, SKE), stage 2 (the decoder);
            # the frozen CLIP and rung 0 train nothing
            pairs = []
            for v in variants:
                c = None if v == CLIP else Components.from_names(v)
                if c is not None and c.trains_patch_level:
                    pairs.append((v, 1))
                if c is not None and c.decoder:
                    pairs.append((v, 2))
            metafunc.parametrize("variant,stage", pairs)
        else:
            metafunc.parametrize("variant", variants)


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    d = torch.device(pytestconfig.getoption("--bench-device"))
    if d.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda, but CUDA is not available")
    return d


@pytest.fixture(scope="session")
def autocast(pytestconfig, device) -> bool:
    return bool(pytestconfig.getoption("--bench-autocast")) and device.type == "cuda"


def pytest_benchmark_update_machine_info(config, machine_info):
    """Name the GPU in the saved JSON, so that the report says which card gave the figures."""
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name(0)
