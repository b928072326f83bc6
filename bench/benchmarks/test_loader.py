"""The refer loader's rate at the paper shape (416 px) on COCO-like JPEGs, per worker process
(``bench/costs/loader.py``); the benchmark report divides a measured training rate by it."""

from __future__ import annotations

import pytest

from bench.costs.loader import loader_rate, write_coco_like


@pytest.fixture(scope="session")
def coco_like(tmp_path_factory):
    return write_coco_like(tmp_path_factory.mktemp("coco-like"), images=96)


def test_loader(benchmark, coco_like, workers):
    """``workers``: bench.costs.loader.LOADER_WORKERS for the --bench-device (conftest)."""
    result = {}

    def run():
        result.update(loader_rate(coco_like, workers, image_size=416, batch_size=32, batches=4 if workers else 2))

    benchmark.group = "loader at 416 px"
    benchmark.pedantic(run, rounds=2, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(kind="loader", **result)
    assert result["images_per_s"] > 0
