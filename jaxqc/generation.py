"""Generated molecules: their file format, the checks a chemist trusts, and a quantum-chemistry test.

- `write_generated` / `read_generated`: extended XYZ (Å), one frame per molecule, with per-molecule
  `smiles`, `valid`, `reason` and `finished` in the comment line, and a CSV beside it (index, SMILES,
  validity, reason, formula, atoms). Writes are atomic.
- `metrics`: validity (jaxqc.chem.check: bonds and bond orders from 3D, standard valences, neutral, closed
  shell, one fragment), uniqueness (canonical SMILES), novelty against the training set and against all of
  QM9, and distributions against the training molecules: atom-type counts, ring counts (total variation
  distance) and bond lengths per bond type (Wasserstein-1 distance, Å). Beside them, the bond-length-table
  protocol most generative-model papers report (`chem.lookup_metrics`: atoms and molecules stable, valid).
- `random_molecules`: the floor: the training molecules' compositions placed atom by atom at random.
- `relax_xtb`: GFN2-xTB (tblite) relaxation of valid molecules; RMSD (Kabsch) between generated and relaxed
  geometry, and whether the bond graph (SMILES) survives.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import chem
from .elements import SYMBOLS, atomic_number
from .errors import DataError, JaxqcError
from .files import atomic_write_text

SMILES_CACHE = "qm9_smiles_v1.json"


# ---- file format ------------------------------------------------------------------------------------------
def write_generated(path, Z, R, finished, checks=None, meta: dict | None = None) -> None:
    """Molecules Z [N, A] (0 padding), R [N, A, 3] Å as extended XYZ, and PATH.csv with SMILES and validity."""
    path = Path(path)
    lines, rows = [], ["index,smiles,valid,reason,formula,n_atoms,finished"]
    for k in range(len(Z)):
        m = Z[k] > 0
        c = checks[k] if checks is not None else None
        info = [f'index={k}', f'finished={"T" if finished[k] else "F"}']
        if c is not None:
            info += [f'valid={"T" if c.valid else "F"}', f'smiles="{c.smiles}"', f'reason="{c.reason}"']
        if k == 0 and meta:
            info.append(f'jaxqc="{json.dumps(meta).replace(chr(34), chr(39))}"')
        lines.append(f"{int(m.sum())}\nProperties=species:S:1:pos:R:3 {' '.join(info)}\n")
        lines.append("".join(f"{SYMBOLS[int(z)]:2s} {r[0]:14.8f} {r[1]:14.8f} {r[2]:14.8f}\n"
                             for z, r in zip(Z[k][m], R[k][m])))
        rows.append(",".join([str(k), c.smiles if c else "", str(bool(c.valid)) if c else "", f'"{c.reason}"' if c
                              else "", chem.formula(Z[k]), str(int(m.sum())), str(bool(finished[k]))]))
    atomic_write_text(path, "".join(lines))
    atomic_write_text(path.with_suffix(".csv"), "\n".join(rows) + "\n")


_INFO = re.compile(r'(\w+)=("[^"]*"|\S+)')


def read_generated(path) -> dict:
    """{"Z" [N, A], "R" [N, A, 3] Å, "finished" [N]} of a file written by write_generated (or any XYZ /
    extended XYZ file of molecules with element symbols; missing flags count as finished)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it as text ({err})") from None
    lines = text.splitlines()
    mols, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            raise DataError(f"{path}:{i + 1}: expected an atom count, found {lines[i][:40]!r}") from None
        if n < 0 or i + 2 + n > len(lines):
            raise DataError(f"{path}:{i + 1}: molecule of {n} atoms runs past the end of the file")
        info = {k: v.strip('"') for k, v in _INFO.findall(lines[i + 1])}
        Z, R = [], []
        for j in range(i + 2, i + 2 + n):
            tok = lines[j].split()
            if len(tok) < 4:
                raise DataError(f"{path}:{j + 1}: expected 'element x y z', found {lines[j][:40]!r}")
            try:
                Z.append(atomic_number(tok[0]))
                R.append([float(x) for x in tok[1:4]])
            except (ValueError, JaxqcError) as err:
                raise DataError(f"{path}:{j + 1}: {err}") from None
        mols.append((Z, R, info.get("finished", "T") == "T"))
        i += 2 + n
    if not mols:
        raise DataError(f"{path}: no molecules in the file")
    A = max(len(m[0]) for m in mols)
    Zs, Rs = np.zeros((len(mols), A), np.int32), np.zeros((len(mols), A, 3))
    for k, (Z, R, _) in enumerate(mols):
        Zs[k, :len(Z)], Rs[k, :len(Z)] = Z, R
    if not np.all(np.isfinite(Rs)):
        raise DataError(f"{path}: non-finite coordinates")
    return {"Z": Zs, "R": Rs, "finished": np.array([m[2] for m in mols])}


# ---- reference sets ---------------------------------------------------------------------------------------
def qm9_smiles(data, progress: bool = False) -> list[str]:
    """The checker's canonical SMILES of every molecule of a QM9 Dataset ("" for invalid ones), cached in
    $JAXQC_CACHE (about 90 s once on one core)."""
    from .files import cache_dir

    path = cache_dir() / SMILES_CACHE
    md5 = data.md5
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved.get("md5") == md5 and len(saved["smiles"]) == len(data):
                return saved["smiles"]
        except (OSError, ValueError, KeyError):
            pass  # recomputed below
    out, t0 = [], time.perf_counter()
    for k in range(len(data)):
        c = chem.check(data.Z[k], data.R[k])
        out.append(c.smiles if c.valid else "")
        if progress and k % 5000 == 0:
            print(f"\r  QM9 SMILES {k}/{len(data)} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    atomic_write_text(path, json.dumps({"md5": md5, "smiles": out}))
    return out


# ---- metrics ----------------------------------------------------------------------------------------------
def _tv(a: dict, b: dict) -> float:
    """Total variation distance between two count histograms (dicts)."""
    na, nb = max(sum(a.values()), 1), max(sum(b.values()), 1)
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


def distributions(Z, R, checks) -> dict:
    """Histograms of the valid molecules: atoms per element per molecule, rings per molecule, bond lengths."""
    atoms, rings, bonds = {}, {}, {}
    for k, c in enumerate(checks):
        if not c.valid:
            continue
        m = Z[k] > 0
        for z in np.unique(Z[k][m]):
            key = f"{SYMBOLS[int(z)]}{int(np.sum(Z[k] == z))}"
            atoms[key] = atoms.get(key, 0) + 1
        rings[c.n_rings] = rings.get(c.n_rings, 0) + 1
        for t, ls in chem.bond_lengths(Z[k], R[k], c.bonds).items():
            bonds.setdefault(t, []).extend(ls)
    return {"atom_counts": atoms, "rings": rings, "bond_lengths": bonds}


def compare_distributions(gen: dict, ref: dict) -> dict:
    from scipy.stats import wasserstein_distance

    out = {"atom_counts_tv": _tv(gen["atom_counts"], ref["atom_counts"]),
           "rings_tv": _tv({str(k): v for k, v in gen["rings"].items()}, {str(k): v for k, v in ref["rings"].items()}),
           "bond_length_w1_ang": {}}
    for t, ls in sorted(ref["bond_lengths"].items(), key=lambda kv: -len(kv[1])):
        g = gen["bond_lengths"].get(t, [])
        if len(ls) >= 20 and len(g) >= 5:
            out["bond_length_w1_ang"][t] = {"w1": float(wasserstein_distance(g, ls)), "n_generated": len(g),
                                            "n_reference": len(ls), "mean_generated": float(np.mean(g)),
                                            "mean_reference": float(np.mean(ls))}
    return out


def metrics(Z, R, checks, train_smiles: set, all_smiles: set | None, finished=None) -> dict:
    """Validity, uniqueness and novelty (fractions of all n generated molecules), as the paper counts them."""
    n = len(checks)
    valid = [c for c in checks if c.valid]
    seen, unique = set(), []
    for c in valid:
        if c.smiles not in seen:
            seen.add(c.smiles)
            unique.append(c.smiles)
    novel = [s for s in unique if s not in train_smiles]
    out = {"n": n, "valid": len(valid) / n, "valid_unique": len(unique) / n,
           "valid_unique_novel_vs_train": len(novel) / n,
           "unique_among_valid": len(unique) / max(len(valid), 1),
           "reasons": _counts([c.reason for c in checks if not c.valid])}
    if all_smiles is not None:
        out["valid_unique_novel_vs_qm9"] = sum(s not in all_smiles for s in unique) / n
        out["novel_in_qm9_not_train"] = sum(s in all_smiles for s in novel)
    if finished is not None:
        out["finished"] = float(np.mean(finished))
    return out


def _counts(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ---- the floor: random placement --------------------------------------------------------------------------
def random_molecules(Z_train, n: int, seed: int = 0, min_ang: float = 0.9, max_ang: float = 1.7):
    """n molecules with the compositions of random training molecules, each atom placed at a random distance
    in [min_ang, max_ang] Å from a random placed atom and at least min_ang from all (the same grid shell as
    G-SchNet, without a model). Returns (Z [n, A], R [n, A, 3])."""
    rng = np.random.default_rng(seed)
    A = Z_train.shape[1]
    Zs, Rs = np.zeros((n, A), np.int32), np.zeros((n, A, 3))
    for k in range(n):
        z = Z_train[rng.integers(len(Z_train))]
        z = rng.permutation(z[z > 0])
        R = np.zeros((len(z), 3))
        for i in range(1, len(z)):
            for _ in range(1000):
                v = rng.normal(size=3)
                p = R[rng.integers(i)] + v / np.linalg.norm(v) * rng.uniform(min_ang, max_ang)
                if np.min(np.linalg.norm(R[:i] - p, axis=1)) >= min_ang:
                    break
            R[i] = p
        Zs[k, :len(z)], Rs[k, :len(z)] = z, R
    return Zs, Rs


# ---- the physics test: GFN2-xTB relaxation ----------------------------------------------------------------
def kabsch_rmsd(P, Q) -> float:
    """RMSD (Å) of P and Q [A, 3] after the best superposition (rotation + translation, no reflection)."""
    P, Q = P - P.mean(0), Q - Q.mean(0)
    U, s, Vt = np.linalg.svd(P.T @ Q)
    d = np.sign(np.linalg.det(U @ Vt))
    Rm = U @ np.diag([1.0, 1.0, d]) @ Vt
    return float(np.sqrt(np.mean(np.sum((P @ Rm - Q) ** 2, axis=1))))


def relax_xtb(Z, R, fmax_kcal_mol_ang: float = 1.0, max_steps: int = 300) -> dict:
    """Relax one molecule (Z [A], R [A, 3] Å, no padding) with GFN2-xTB (L-BFGS on tblite's energy and
    gradient). Returns {"R" relaxed, "converged", "steps", "energy_kcal_mol", "rmsd_ang", "error"}."""
    from scipy.optimize import minimize

    from .data.generate import XtbPotential

    try:
        pot = XtbPotential(Z, R)
    except JaxqcError as err:
        return {"R": R, "converged": False, "steps": 0, "error": str(err)}
    calls = {"n": 0}

    def f(x):
        calls["n"] += 1
        e, F = pot(x.reshape(-1, 3))
        return e, -F.ravel()

    try:
        res = minimize(f, np.asarray(R, float).ravel(), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_steps, "gtol": fmax_kcal_mol_ang})
    except JaxqcError as err:
        return {"R": R, "converged": False, "steps": calls["n"], "error": str(err)}
    Rr = res.x.reshape(-1, 3)
    _, F = pot(Rr)
    conv = bool(np.max(np.abs(F)) <= fmax_kcal_mol_ang)
    return {"R": Rr, "converged": conv, "steps": calls["n"], "energy_kcal_mol": float(res.fun),
            "rmsd_ang": kabsch_rmsd(np.asarray(R, float), Rr), "error": ""}


def relax_all(Z, R, checks, limit: int | None = None, progress: bool = False) -> dict:
    """xTB relaxation of the valid molecules (the first `limit` of them): RMSD statistics and the fraction
    whose bond graph (canonical SMILES) is unchanged after relaxation."""
    idx = [k for k, c in enumerate(checks) if c.valid][:limit]
    rmsd, same, conv, errors, t0 = [], [], [], 0, time.perf_counter()
    for j, k in enumerate(idx):
        m = Z[k] > 0
        r = relax_xtb(Z[k][m], R[k][m])
        if r["error"]:
            errors += 1
            same.append(False)
            continue
        c = chem.check(Z[k][m], r["R"])
        rmsd.append(r["rmsd_ang"])
        same.append(c.valid and c.smiles == checks[k].smiles)
        conv.append(r["converged"])
        if progress:
            print(f"\r  xTB relaxation {j + 1}/{len(idx)} ({time.perf_counter() - t0:.0f} s)", end="",
                  file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    rmsd = np.asarray(rmsd)
    return {"n_relaxed": len(idx), "xtb_failed": errors, "converged": float(np.mean(conv)) if conv else 0.0,
            "rmsd_ang_median": float(np.median(rmsd)) if len(rmsd) else None,
            "rmsd_ang_mean": float(np.mean(rmsd)) if len(rmsd) else None,
            "rmsd_ang_p90": float(np.percentile(rmsd, 90)) if len(rmsd) else None,
            "bonds_survive": float(np.mean(same)) if same else 0.0,
            "method": "GFN2-xTB (tblite), L-BFGS to max |F| <= 1 kcal/mol/Å", "seconds": time.perf_counter() - t0}


# ---- `jaxqc evaluate RUN --generated FILE` ---------------------------------------------------------------
def training_data(header, data=None):
    """The model's training data set: `data` if given (checked by md5), else the one its provenance names."""
    from .data import io

    prov = header.get("provenance", {})
    if data is None:
        sources = [s for s in (prov.get("dataset_source"), prov.get("dataset_name")) if s]
        if not sources:
            raise JaxqcError("the model does not name its training data set; give it with --data")
        for source in sources:  # the file it was read from, else its registered name
            try:
                data = io.read(source)
                break
            except JaxqcError as err:
                last = err
        else:
            raise JaxqcError(f"cannot read the model's training data set ({last}); give it with --data") from None
    if prov.get("dataset_md5") not in (None, data.md5, data.meta.get("md5")):
        raise JaxqcError(f"the data set given is not the one the model was trained on (md5 {data.md5} vs "
                         f"{prov.get('dataset_md5')}): novelty needs the training molecules")
    return data


def evaluate(generated: dict, header, data=None, relax: bool = True, relax_limit: int | None = None,
             progress=None) -> dict:
    """Every metric of generated molecules against the model's training data (`data`, or the data set named
    in the model's provenance): validity, uniqueness, novelty (training set, and all of QM9 when the data are
    QM9), the training molecules' own validity (the ceiling), distributions, and (relax) the xTB test."""
    data = training_data(header, data)
    tr = np.asarray(header.get("provenance", {})["train_idx"])
    show = progress is not None
    Z, R = generated["Z"], generated["R"]
    checks = chem.check_many(Z, R)
    train_checks = chem.check_many(data.Z[tr], data.R[tr])
    train_smiles = {c.smiles for c in train_checks if c.valid}
    all_smiles = set(qm9_smiles(data, progress=show)) - {""} if len(data) > 100_000 else None
    out = {"generated": metrics(Z, R, checks, train_smiles, all_smiles, generated.get("finished")),
           "training_set": {"n": len(tr), "valid": float(np.mean([c.valid for c in train_checks]))}}
    if set(np.unique(Z[Z > 0])) <= set(chem.LOOKUP_ELEMENTS):  # the protocol other papers report, beside ours
        out["generated"]["lookup_protocol"] = chem.lookup_metrics(Z, R)
        out["training_set"]["lookup_protocol"] = chem.lookup_metrics(data.Z[tr], data.R[tr])
    out["distributions"] = compare_distributions(distributions(Z, R, checks), distributions(data.Z[tr], data.R[tr],
                                                                                            train_checks))
    if relax:
        out["xtb_relaxation"] = relax_all(Z, R, checks, relax_limit, progress=show)
    return out
