"""One run-identity function (risclip/identity.py) for every kind of run, and the identities it gives pinned:
moving the hashing into one place changed no run's name, so every tracked run and cached file is still
found and reused."""

from __future__ import annotations

import dataclasses

from bench.spine import presets as P
from bench.spine.reference import reference_identity
from bench.spine.variant import baselines_identity, run_identity
from risclip.config import LADDER
from risclip.engine import stage1_key
from risclip.identity import RUNTIME_TRAIN_FIELDS, identity_hash
from risclip.reference import ReferenceConfig

# computed by the code before risclip/identity.py existed (git a8003b6), on the synthref preset, fingerprint "fp"
PINNED = {
    "variant": ["ca80bbd099c9189a", "022dc5a0e1299dff", "7c4b25eec8b1fbdd", "d221998dba08626d", "143021f2e170cd06"],
    "variant_cris": "856276cab0a55c3d",
    "reference_cfg": "8515028ffa24",
    "reference": "edd23fa560cfac10",
    "baselines": "6edb229931126fd8",
    "stage1": "a50dd7aeafe8d2cf-22fadef944ae3be6-e2cfc36748c98c7f",
    "proxy": "RIS-Tiny-AP-e4005a0a5da8-",
}


def test_every_kind_of_run_keeps_its_identity():
    p = P.build("synthref")
    assert [run_identity(p, c, 0, "fp")[1] for c in LADDER] == PINNED["variant"]
    assert run_identity(p, LADDER[2], 1, "fp", ("ours", "cris"))[1] == PINNED["variant_cris"]
    assert ReferenceConfig().config_hash() == PINNED["reference_cfg"]
    assert reference_identity(ReferenceConfig(), 3.0, 2, p.data.to_dict(), "fp", True) == PINNED["reference"]
    assert reference_identity(ReferenceConfig(), 3.0, 2, p.data.to_dict(), "fp", True, beside="") == PINNED["reference"]
    assert baselines_identity(p.data, "fp") == PINNED["baselines"]
    assert stage1_key(p.model.with_components(LADDER[3]), p.train, p.data) == PINNED["stage1"]
    assert p.proxy_clip.cache_path().name.startswith(PINNED["proxy"])


def test_what_never_changes_a_number_never_changes_an_identity():
    p = P.build("synthref")
    base = run_identity(p, LADDER[1], 0, "fp")[1]
    runtime = {"progress": False, "num_workers": 4, "pin_memory": True, "persistent_workers": False,
               "prefetch_factor": 2, "learning_curve": False, "curve_samples": 10, "device": "cpu"}
    assert set(runtime) == set(RUNTIME_TRAIN_FIELDS)
    moved = dataclasses.replace(p, train=dataclasses.replace(p.train, **runtime),
                                data=dataclasses.replace(p.data, data_root="/elsewhere", image_root="/img"))
    assert run_identity(moved, LADDER[1], 0, "fp")[1] == base
    c = p.model.with_components(LADDER[1])
    assert stage1_key(c, moved.train, p.data) == stage1_key(c, p.train, p.data)
    # what does change a number does change it
    assert run_identity(dataclasses.replace(p, train=dataclasses.replace(p.train, lr=1e-4)), LADDER[1], 0, "fp")[1] != base
    assert run_identity(p, LADDER[1], 1, "fp")[1] != base
    assert identity_hash({"a": 1}) != identity_hash({"a": 2}) and len(identity_hash({"a": 1}, 12)) == 12
