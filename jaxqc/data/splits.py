"""The one place that decides train / validation / test indices.

Every policy is a pure function of sizes and a seed (and, for the data-aware ones, `len(data)`,
`data.meta["name"]` and `data.props`), returning int index arrays into the data set:

    seeded(n, sizes, seed)                   named disjoint parts of a seeded permutation (the primitive)
    qm9_protocol(n, seed, n_test, n_valid)   QM9's fixed benchmark split: 10k test, 2k validation, train[:N]
    for_krr / for_gdml / for_network         each model family's default split of one data set
    benchmark_protocol(...)                  `jaxqc compare`: a training pool, validation and test

The data-aware policies return {"train", "valid", "test", "protocol"} ("protocol": a sentence for
model files and reports); `benchmark_protocol` returns {"pool", "valid", "test", "description"}.
Indices come from numpy's PCG64 (`default_rng(seed).permutation`), whose stream numpy keeps stable,
so published numbers reproduce; tests/test_splits.py pins every policy against its original formula.
Training sets are nested where the protocol says so: `train[:N]` for growing N.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError, JaxqcError

N_QM9 = 130_831  # molecules in full QM9 after its geometry check (qm9pack, `load_qm9`)
QM9_N_TEST = 10_000
QM9_N_VALID = 2_000


def is_qm9(data, by: str = "name") -> bool:
    """True if `data` is the full QM9 set (N_QM9 molecules), to which the fixed protocol applies.

    by="name": its meta name is "qm9" (KRR and `jaxqc compare`); by="props": it has QM9's U0
    property (networks, which accept any file with the QM9 targets). Both keep their callers' rules.
    """
    if len(data) != N_QM9:
        return False
    if by == "name":
        return data.meta.get("name") == "qm9"
    if by == "props":
        return "U0" in data.props
    raise ValueError(f"is_qm9: by={by!r}, expected 'name' or 'props'")


def seeded(n: int, sizes: dict, seed: int = 0) -> dict:
    """Disjoint index arrays {name: idx} of the given sizes from a seeded permutation of range(n).

    Parts are taken in the order given, so a larger later part keeps the earlier ones fixed; each part
    is sorted. A size of None takes all that is left.
    """
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, size in sizes.items():
        size = n - start if size is None else int(size)
        if size < 0 or start + size > n:
            raise DataError(f"split sizes {sizes} need more than the {n} molecules available")
        out[name] = np.sort(perm[start:start + size])
        start += size
    return out


def qm9_protocol(n: int = N_QM9, seed: int = 0, n_test: int = QM9_N_TEST, n_valid: int = QM9_N_VALID) -> dict:
    """jaxqc's fixed QM9 split: {"test", "valid", "train", "protocol"}, row indices into `load_qm9()`.

    perm = np.random.default_rng(seed).permutation(n); test = perm[:n_test],
    valid = perm[n_test:n_test + n_valid], train = perm[n_test + n_valid:]. All three stay in
    permutation order (not sorted), so `train[:N]` is a random subset of size N and the subsets for
    growing N are nested: learning curves train on train[:100], train[:1000], ... with the same test set.
    """
    n, n_test, n_valid = int(n), int(n_test), int(n_valid)
    if min(n_test, n_valid) < 0 or n_test + n_valid > n:
        raise DataError(f"QM9 split: {n_test} test + {n_valid} validation molecules need more than the {n} "
                        f"available")
    perm = np.random.default_rng(seed).permutation(n)
    return {"test": perm[:n_test], "valid": perm[n_test:n_test + n_valid], "train": perm[n_test + n_valid:],
            "protocol": f"QM9 fixed split (seed {seed}): {n_test} test, {n_valid} validation, train[:N] (nested)"}


def _rest(n: int, split: dict) -> np.ndarray:
    """Sorted indices of range(n) in neither split["train"] nor split["valid"]."""
    return np.setdiff1d(np.arange(n), np.concatenate([split["train"], split["valid"]]))


def for_krr(data, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    """KRR: QM9 (by name) the fixed protocol (validation cut to n_valid); other data a seeded split with
    10% test and (by default) 10% validation, in that order. Training = train[:n_train]."""
    if is_qm9(data, by="name"):
        split = qm9_protocol(len(data), seed=seed)
        split["protocol"] = f"qm9 fixed split (seed {seed}: 10,000 test, 2,000 validation)"
        if n_valid is not None:
            split["valid"] = split["valid"][:n_valid]
    else:
        n = len(data)
        n_test = max(1, n // 10)
        nv = n_valid if n_valid is not None else max(1, n // 10)
        split = seeded(n, {"test": n_test, "valid": nv, "train": None}, seed=seed)
        split["protocol"] = f"random split (seed {seed})"
    if n_train > len(split["train"]):
        raise DataError(f"--n-train {n_train} is more than the {len(split['train'])} training molecules available")
    split["train"] = split["train"][:n_train]
    return split


def for_gdml(data, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    """GDML: seeded disjoint train (n_train) and validation (default min(1000, the rest)) frames;
    test = the other frames. At least one of each of train and validation."""
    n = len(data)
    if n_valid is None:
        n_valid = min(1000, n - n_train)
    if n_train < 1 or n_valid < 1:
        raise DataError(f"need at least one training and one validation frame (got {n_train}, {n_valid})")
    split = seeded(n, {"train": n_train, "valid": n_valid}, seed=seed)
    split["test"] = _rest(n, split)
    split["protocol"] = f"random disjoint train/valid split of the data set (seed {seed})"
    return split


def for_network(data, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    """Networks: QM9 (by props) the fixed seed-0 protocol whatever `seed` (train[:n_train], validation
    cut to n_valid when given and non-zero); other data a seeded train/validation split (validation
    default min(1000, the rest)) with test = the other frames."""
    if is_qm9(data, by="props"):
        split = qm9_protocol(len(data))
        if n_train > len(split["train"]):
            raise JaxqcError(f"QM9 has {len(split['train'])} training molecules, asked for {n_train}")
        return {"train": split["train"][:n_train], "valid": split["valid"][: n_valid or len(split["valid"])],
                "test": split["test"], "protocol": "QM9 fixed split (seed 0): 10k test, 2k validation, train[:N]"}
    n_valid = min(1000, len(data) - n_train) if n_valid is None else n_valid
    split = seeded(len(data), {"train": n_train, "valid": n_valid}, seed=seed)
    split["test"] = _rest(len(data), split)
    split["protocol"] = f"random train/validation split of the file (seed {seed}); test = the other frames"
    return split


def benchmark_protocol(data, kind: str, n_test: int, n_valid: int, has_test_file: bool, n_test_file: int = 0,
                       seed: int = 0) -> dict:
    """`jaxqc compare`: {"pool", "valid", "test", "description"}; training sets are prefixes of "pool".

    kind "property" on full QM9 (by name) without a test file: the fixed protocol, test and validation
    cut to n_test and n_valid. With a test file (rMD17): the first min(1000, n) frames of a seeded
    permutation, validation = the last of those; test = every frame of the test file. Otherwise one
    seeded permutation: test = its first, validation = its last, pool = the frames between.
    """
    n = len(data)
    if kind == "property" and is_qm9(data, by="name") and not has_test_file:
        s = qm9_protocol(n, seed=seed)
        return {"pool": s["train"], "valid": s["valid"][:n_valid], "test": s["test"][:n_test],
                "description": f"QM9 fixed split (seed {seed}): test = {min(n_test, len(s['test']))} of the "
                               f"10,000 test molecules, validation = {min(n_valid, len(s['valid']))}, "
                               f"training = train[:N] (nested)"}
    order = np.random.default_rng(seed).permutation(n)
    if has_test_file:
        n_total = min(1000, n)
        nv = min(n_valid, max(1, n_total // 10))
        if n_total - nv < 1:
            raise DataError(f"--data has {n} frame(s): too few to train and validate")
        return {"pool": order[:n_total - nv], "valid": order[n_total - nv:n_total],
                "test": np.arange(n_test_file),
                "description": f"rMD17 protocol: a seed-{seed} permutation of --data, its first {n_total} frames; "
                               f"validation = the last {nv} of those, training = a prefix of the other "
                               f"{n_total - nv} (nested); test = all {n_test_file} frames of --test"}
    nv = min(n_valid, max(1, n // 10))
    nt = min(n_test, max(1, n // 3))
    if n - nv - nt < 1:
        raise DataError(f"--data has {n} frame(s): too few to train, validate and test")
    return {"pool": order[nt:n - nv], "valid": order[n - nv:], "test": order[:nt],
            "description": f"a seed-{seed} permutation of --data: test = its first {nt}, validation = its last "
                           f"{nv}, training = a prefix of the {n - nt - nv} between (nested)"}


def rmd17_files(n_train_file: int, n_test_file: int, n_train: int, n_valid: int, n_test: int | None = None,
                seed: int = 0, name: str = "") -> dict:
    """rMD17's published train_k / test_k files concatenated (train file first): a seeded permutation of the
    train file gives `n_train` training then `n_valid` validation frames (sorted); the test frames are the
    first `n_test` of the test file (default all). Indices into the concatenation."""
    n_test = n_test_file if n_test is None else n_test
    if n_train + n_valid > n_train_file or n_test > n_test_file:
        raise DataError(f"rMD17 split {name}: asked for {n_train} + {n_valid} of {n_train_file} train-file frames "
                        f"and {n_test} of {n_test_file} test-file frames")
    order = np.random.default_rng(seed).permutation(n_train_file)
    return {"train": np.sort(order[:n_train]), "valid": np.sort(order[n_train:n_train + n_valid]),
            "test": n_train_file + np.arange(n_test),
            "protocol": f"rMD17 split {name}: train_{name} seeded {n_train} train + {n_valid} validation; "
                        f"test_{name} ({n_test} frames)"}
