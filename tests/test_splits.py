"""jaxqc.data.splits gives exactly the indices of the code it replaced (published numbers must
reproduce), keeps its parts disjoint and its training sets nested, and the old names still work.

The `old_*` functions are verbatim copies of the replaced code (molecules.random_split,
qm9.qm9_protocol_split, krr.default_split, the split inside gdml.train_gdml, train.run.make_split,
compare.make_protocol's index logic with PLANS[kind][budget]["protocol"] passed in as `p`)."""
from __future__ import annotations

import numpy as np
import pytest

from jaxqc.data import splits
from jaxqc.data.splits import N_QM9
from jaxqc.errors import DataError, JaxqcError

SEEDS = (0, 1, 7, 12345)


class FakeData:
    """What the split policies read of a Dataset: its length, meta["name"] and property names."""

    def __init__(self, n: int, name: str | None = None, props=()):
        self.n = n
        self.meta = {} if name is None else {"name": name}
        self.props = {k: None for k in props}

    def __len__(self) -> int:
        return self.n


QM9_BY_NAME = FakeData(N_QM9, name="qm9")
QM9_BY_PROPS = FakeData(N_QM9, name="my_qm9_file", props=("U0", "mu"))
QM9_BOTH = FakeData(N_QM9, name="qm9", props=("U0",))


# ---- the replaced code, verbatim --------------------------------------------------------------------
def old_random_split(n: int, sizes: dict, seed: int = 0) -> dict:
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, size in sizes.items():
        size = n - start if size is None else int(size)
        if size < 0 or start + size > n:
            raise DataError(f"split sizes {sizes} need more than the {n} molecules available")
        out[name] = np.sort(perm[start:start + size])
        start += size
    return out


def old_qm9_protocol_split(n: int = N_QM9, seed: int = 0, n_test: int = 10_000, n_valid: int = 2_000) -> dict:
    n, n_test, n_valid = int(n), int(n_test), int(n_valid)
    if min(n_test, n_valid) < 0 or n_test + n_valid > n:
        raise DataError(f"QM9 split: {n_test} test + {n_valid} validation molecules need more than the {n} "
                        f"available")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": perm[:n_test], "valid": perm[n_test:n_test + n_valid], "train": perm[n_test + n_valid:]}


def old_krr_default_split(data, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    if data.meta.get("name") == "qm9" and len(data) == N_QM9:
        split = old_qm9_protocol_split(len(data), seed=seed)
        split["protocol"] = f"qm9 fixed split (seed {seed}: 10,000 test, 2,000 validation)"
        if n_valid is not None:
            split["valid"] = split["valid"][:n_valid]
    else:
        n_test = max(1, len(data) // 10)
        nv = n_valid if n_valid is not None else max(1, len(data) // 10)
        split = old_random_split(len(data), {"test": n_test, "valid": nv, "train": None}, seed=seed)
        split["protocol"] = f"random split (seed {seed})"
    if n_train > len(split["train"]):
        raise DataError(f"--n-train {n_train} is more than the {len(split['train'])} training molecules available")
    split["train"] = split["train"][:n_train]
    return split


def old_gdml_split(data, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    if n_valid is None:
        n_valid = min(1000, len(data) - n_train)
    if n_train < 1 or n_valid < 1:
        raise DataError(f"need at least one training and one validation frame (got {n_train}, {n_valid})")
    return old_random_split(len(data), {"train": n_train, "valid": n_valid}, seed=seed)


def old_make_split(data, n_train: int, n_valid: int | None, seed: int = 0) -> dict:
    if "U0" in data.props and len(data) == N_QM9:
        split = old_qm9_protocol_split(len(data))
        if n_train > len(split["train"]):
            raise JaxqcError(f"QM9 has {len(split['train'])} training molecules, asked for {n_train}")
        return {"train": split["train"][:n_train], "valid": split["valid"][: n_valid or len(split["valid"])],
                "test": split["test"], "protocol": "QM9 fixed split (seed 0): 10k test, 2k validation, train[:N]"}
    n_valid = min(1000, len(data) - n_train) if n_valid is None else n_valid
    split = old_random_split(len(data), {"train": n_train, "valid": n_valid}, seed=seed)
    used = np.concatenate([split["train"], split["valid"]])
    split["test"] = np.setdiff1d(np.arange(len(data)), used)
    split["protocol"] = f"random train/validation split of the file (seed {seed}); test = the other frames"
    return split


def old_make_protocol(data, kind: str, p: dict, has_test_file: bool, n_test_file: int = 0, seed: int = 0) -> dict:
    n = len(data)
    if kind == "property" and data.meta.get("name") == "qm9" and n == N_QM9 and not has_test_file:
        s = old_qm9_protocol_split(n, seed=seed)
        return {"pool": s["train"], "valid": s["valid"][:p["n_valid"]], "test": s["test"][:p["n_test"]],
                "description": f"QM9 fixed split (seed {seed}): test = {min(p['n_test'], len(s['test']))} of the "
                               f"10,000 test molecules, validation = {min(p['n_valid'], len(s['valid']))}, "
                               f"training = train[:N] (nested)"}
    order = np.random.default_rng(seed).permutation(n)
    if has_test_file:
        n_total = min(1000, n)
        n_valid = min(p["n_valid"], max(1, n_total // 10))
        if n_total - n_valid < 1:
            raise DataError(f"--data has {n} frame(s): too few to train and validate")
        return {"pool": order[:n_total - n_valid], "valid": order[n_total - n_valid:n_total],
                "test": np.arange(n_test_file),
                "description": f"rMD17 protocol: a seed-{seed} permutation of --data, its first {n_total} frames; "
                               f"validation = the last {n_valid} of those, training = a prefix of the other "
                               f"{n_total - n_valid} (nested); test = all {n_test_file} frames of --test"}
    n_valid = min(p["n_valid"], max(1, n // 10))
    n_test = min(p["n_test"], max(1, n // 3))
    if n - n_valid - n_test < 1:
        raise DataError(f"--data has {n} frame(s): too few to train, validate and test")
    return {"pool": order[n_test:n - n_valid], "valid": order[n - n_valid:], "test": order[:n_test],
            "description": f"a seed-{seed} permutation of --data: test = its first {n_test}, validation = its last "
                           f"{n_valid}, training = a prefix of the {n - n_test - n_valid} between (nested)"}


# ---- helpers ------------------------------------------------------------------------------------------
def assert_same(new: dict, old: dict, extra=()) -> None:
    """Same keys (new may add `extra` ones), same index arrays in the same order, same strings."""
    assert set(new) - set(extra) == set(old), (sorted(new), sorted(old))
    for k, v in old.items():
        if isinstance(v, str):
            assert new[k] == v, k
        else:
            assert np.asarray(new[k]).dtype.kind == "i", k
            np.testing.assert_array_equal(new[k], v, err_msg=k)


def assert_disjoint(split: dict, n: int, keys=("train", "valid", "test")) -> None:
    parts = [np.asarray(split[k]) for k in keys if k in split]
    for p in parts:
        assert len(np.unique(p)) == len(p) and (len(p) == 0 or (p.min() >= 0 and p.max() < n))
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx)


def same_error(new, old, *args, **kwargs):
    """Both raise the same exception type and message."""
    with pytest.raises(Exception) as a:
        old(*args, **kwargs)
    with pytest.raises(type(a.value)) as b:
        new(*args, **kwargs)
    assert type(b.value) is type(a.value) and str(b.value) == str(a.value)


# ---- seeded (random_split) ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, sizes", [
    (100, {"test": 10, "valid": 5, "train": None}),
    (100, {"train": 32, "valid": 16}),
    (3000, {"train": 1000, "valid": 1000}),
    (1, {"train": 1}),
    (50, {"a": 0, "b": None}),
])
def test_seeded_equals_random_split(n, sizes, seed):
    new, old = splits.seeded(n, sizes, seed), old_random_split(n, sizes, seed)
    assert_same(new, old)
    assert list(new) == list(sizes)
    assert_disjoint(new, n, keys=tuple(sizes))


def test_seeded_errors_and_growth():
    same_error(splits.seeded, old_random_split, 10, {"train": 11})
    same_error(splits.seeded, old_random_split, 10, {"train": 5, "valid": 6})
    same_error(splits.seeded, old_random_split, 10, {"train": -1})
    small = splits.seeded(200, {"test": 20, "valid": 10}, seed=3)
    big = splits.seeded(200, {"test": 20, "valid": 40}, seed=3)  # a larger later part keeps earlier ones
    np.testing.assert_array_equal(small["test"], big["test"])
    assert set(small["valid"]) <= set(big["valid"])
    np.testing.assert_array_equal(splits.seeded(10, {"a": 3}, seed=0)["a"], [2, 4, 6])  # pinned PCG64 stream


# ---- qm9_protocol --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, n_test, n_valid", [(N_QM9, 10_000, 2_000), (100, 10, 5), (5000, 1000, 200),
                                                (12, 0, 0), (12, 12, 0)])
def test_qm9_protocol_equals_old(n, n_test, n_valid, seed):
    new = splits.qm9_protocol(n, seed=seed, n_test=n_test, n_valid=n_valid)
    assert_same(new, old_qm9_protocol_split(n, seed, n_test, n_valid), extra=("protocol",))
    assert_disjoint(new, n)
    assert sum(len(new[k]) for k in ("train", "valid", "test")) == n


def test_qm9_protocol_defaults_pinned_and_nested():
    s = splits.qm9_protocol()
    assert_same(s, old_qm9_protocol_split(), extra=("protocol",))
    np.testing.assert_array_equal(s["test"][:5], [2275, 111633, 104936, 64628, 76262])
    assert [len(s[k]) for k in ("test", "valid", "train")] == [10_000, 2_000, N_QM9 - 12_000]
    for small, big in [(100, 1000), (1000, 10_000), (10_000, 100_000)]:
        assert set(s["train"][:small]) <= set(s["train"][:big])
    assert "seed 0" in s["protocol"]
    same_error(splits.qm9_protocol, old_qm9_protocol_split, n=100, n_test=90, n_valid=20)
    same_error(splits.qm9_protocol, old_qm9_protocol_split, n=100, n_test=-1, n_valid=20)


# ---- is_qm9 --------------------------------------------------------------------------------------------
def test_is_qm9_keeps_each_callers_rule():
    assert splits.is_qm9(QM9_BY_NAME) and not splits.is_qm9(QM9_BY_NAME, by="props")
    assert splits.is_qm9(QM9_BY_PROPS, by="props") and not splits.is_qm9(QM9_BY_PROPS)
    assert splits.is_qm9(QM9_BOTH) and splits.is_qm9(QM9_BOTH, by="props")
    for wrong_size in (FakeData(N_QM9 - 1, "qm9", ("U0",)), FakeData(1000, "qm9", ("U0",))):
        assert not splits.is_qm9(wrong_size) and not splits.is_qm9(wrong_size, by="props")
    with pytest.raises(ValueError):
        splits.is_qm9(QM9_BY_NAME, by="size")


# ---- for_krr (krr.default_split) -------------------------------------------------------------------
KRR_CASES = [
    (FakeData(1000, "ethanol"), 100, None), (FakeData(1000), 800, None), (FakeData(1000), 50, 30),
    (FakeData(37, "x"), 5, None), (FakeData(10, "qm9"), 2, None),  # small "qm9": not full QM9, random split
    (QM9_BY_NAME, 1000, None), (QM9_BY_NAME, 100, 500), (QM9_BOTH, 50_000, 2_000),
    (QM9_BY_PROPS, 1000, None),  # QM9 rows under another name: the random split, as before
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("data, n_train, n_valid", KRR_CASES)
def test_for_krr_equals_default_split(data, n_train, n_valid, seed):
    new = splits.for_krr(data, n_train, n_valid, seed)
    assert_same(new, old_krr_default_split(data, n_train, n_valid, seed))
    assert_disjoint(new, len(data))
    assert len(new["train"]) == n_train


def test_for_krr_nested_and_errors():
    a, b = splits.for_krr(QM9_BY_NAME, 100, seed=0), splits.for_krr(QM9_BY_NAME, 10_000, seed=0)
    np.testing.assert_array_equal(a["train"], b["train"][:100])
    np.testing.assert_array_equal(a["test"], b["test"])
    c, d = splits.for_krr(FakeData(500), 10, seed=2), splits.for_krr(FakeData(500), 300, seed=2)
    assert set(c["train"]) <= set(d["train"])  # the random split's training part is sorted, so check as sets
    same_error(splits.for_krr, old_krr_default_split, FakeData(100), 81)
    same_error(splits.for_krr, old_krr_default_split, QM9_BY_NAME, N_QM9)
    same_error(splits.for_krr, old_krr_default_split, FakeData(100), 10, 95)


def test_krr_default_split_is_for_krr():
    from jaxqc.kernels import krr

    for data, n_train, n_valid in KRR_CASES[:4] + KRR_CASES[5:7]:
        assert_same(krr.default_split(data, n_train, n_valid, 3), splits.for_krr(data, n_train, n_valid, 3))


# ---- for_gdml (train_gdml's split) ----------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, n_train, n_valid", [(3000, 200, None), (3000, 2500, None), (3000, 100, 50),
                                                 (20, 10, None), (2, 1, 1)])
def test_for_gdml_equals_old(n, n_train, n_valid, seed):
    data = FakeData(n, "ethanol")
    new = splits.for_gdml(data, n_train, n_valid, seed)
    assert_same(new, old_gdml_split(data, n_train, n_valid, seed), extra=("test", "protocol"))
    assert_disjoint(new, n)
    assert sum(len(new[k]) for k in ("train", "valid", "test")) == n
    assert new["protocol"] == f"random disjoint train/valid split of the data set (seed {seed})"


@pytest.mark.parametrize("n, n_train, n_valid", [(10, 10, None), (10, 0, 5), (10, 5, 0), (10, 8, 3)])
def test_for_gdml_errors(n, n_train, n_valid):
    same_error(splits.for_gdml, old_gdml_split, FakeData(n), n_train, n_valid, 0)


def test_train_gdml_uses_for_gdml(monkeypatch):
    """train_gdml's split (stored in the model) equals for_gdml's, and its checks still come first."""
    from jaxqc.data import registry
    from jaxqc.kernels import gdml

    monkeypatch.setattr(gdml, "fit", lambda *a, **k: {"timings": {}})
    data = registry.load("ethanol-xtb")
    model = gdml.train_gdml(data, gdml.GDMLConfig(symmetric=False), n_train=50, n_valid=20, seed=4)
    assert_same(model["split"], old_gdml_split(data, 50, 20, 4), extra=("test", "protocol"))
    with pytest.raises(DataError, match="at least one training and one validation frame"):
        gdml.train_gdml(data, gdml.GDMLConfig(), n_train=0, n_valid=20)


# ---- for_network (train.run.make_split) ------------------------------------------------------------
NETWORK_CASES = [
    (FakeData(3000, "ethanol"), 500, None), (FakeData(3000), 2500, None), (FakeData(3000), 100, 40),
    (FakeData(50), 10, None), (QM9_BY_PROPS, 1000, None), (QM9_BY_PROPS, 110_000, 500), (QM9_BOTH, 100, 0),
    (QM9_BY_NAME, 1000, None),  # full QM9 size without U0: the random split, as before
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("data, n_train, n_valid", NETWORK_CASES)
def test_for_network_equals_make_split(data, n_train, n_valid, seed):
    new = splits.for_network(data, n_train, n_valid, seed)
    assert_same(new, old_make_split(data, n_train, n_valid, seed))
    assert_disjoint(new, len(data))


def test_for_network_nested_and_errors():
    a, b = splits.for_network(QM9_BY_PROPS, 100, None, 5), splits.for_network(QM9_BY_PROPS, 5000, None, 0)
    np.testing.assert_array_equal(a["train"], b["train"][:100])  # QM9: the seed-0 protocol whatever the seed
    same_error(splits.for_network, old_make_split, QM9_BY_PROPS, N_QM9, None)
    same_error(splits.for_network, old_make_split, FakeData(100), 90, 20)


# ---- benchmark_protocol (compare.make_protocol) -------------------------------------------------------
PLAN_PROTOCOLS = [{"n_test": 1000, "n_valid": 200}, {"n_test": 10_000, "n_valid": 2_000},
                  {"n_test": 200, "n_valid": 50}, {"n_test": 50_000, "n_valid": 5_000}]
BENCHMARK_CASES = [
    (QM9_BY_NAME, "property", False, 0), (QM9_BOTH, "property", False, 0),
    (QM9_BY_NAME, "property", True, 500),  # with a test file: the permutation rules
    (QM9_BY_PROPS, "property", False, 0), (FakeData(3000, "ethanol-xtb"), "frames", False, 0),
    (FakeData(100_000, "rmd17"), "frames", True, 1000), (FakeData(3000), "frames", True, 10),
    (FakeData(40), "property", False, 0), (FakeData(5), "frames", False, 0), (FakeData(3), "frames", True, 7),
]


@pytest.mark.parametrize("seed", (0, 3))
@pytest.mark.parametrize("p", PLAN_PROTOCOLS)
@pytest.mark.parametrize("data, kind, has_test_file, n_test_file", BENCHMARK_CASES)
def test_benchmark_protocol_equals_make_protocol(data, kind, has_test_file, n_test_file, p, seed):
    new = splits.benchmark_protocol(data, kind, p["n_test"], p["n_valid"], has_test_file, n_test_file, seed)
    assert_same(new, old_make_protocol(data, kind, p, has_test_file, n_test_file, seed))
    assert_disjoint({"train": new["pool"], "valid": new["valid"]}, len(data))
    if not has_test_file:
        assert_disjoint({"train": new["pool"], "valid": new["valid"], "test": new["test"]}, len(data))


@pytest.mark.parametrize("data, has_test_file", [(FakeData(2), False), (FakeData(1), True), (FakeData(0), True)])
def test_benchmark_protocol_errors(data, has_test_file):
    p = PLAN_PROTOCOLS[0]
    with pytest.raises(DataError) as a:
        old_make_protocol(data, "frames", p, has_test_file, 3, 0)
    with pytest.raises(DataError) as b:
        splits.benchmark_protocol(data, "frames", p["n_test"], p["n_valid"], has_test_file, 3, 0)
    assert str(a.value) == str(b.value)


# ---- the old names are the new functions -------------------------------------------------------------
def test_old_names_are_aliases():
    import jaxqc
    from jaxqc.data import molecules, qm9

    assert molecules.random_split is splits.seeded and jaxqc.random_split is splits.seeded
    assert qm9.qm9_protocol_split is splits.qm9_protocol
    assert qm9.N_QM9 == N_QM9 == 130_831
