"""Chemistry checks of 3D molecules with RDKit (the optional `rdkit` extra): is a generated geometry a
molecule a chemist would accept, and which one is it?

`check(Z, R)` perceives bonds from the coordinates alone (RDKit's rdDetermineBonds: connectivity from
covalent radii, then bond orders by the xyz2mol algorithm for a neutral molecule) and calls the geometry
valid when
  - bond orders exist that give every atom a standard valence with no formal charge and no radical
    electron (neutral, closed shell), and RDKit's sanitisation accepts the result;
  - the atoms form one connected fragment.
Its canonical SMILES (heavy atoms, no stereo: a generated geometry is checked as a graph) identifies the
molecule for uniqueness and novelty. The same checker runs on QM9 itself, as the ceiling of validity.

Positions in Å. Everything here is host-side Python: it checks results, it is not differentiated.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .elements import SYMBOLS
from .errors import JaxqcError


def _rdkit():
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import rdDetermineBonds
    except ImportError:
        raise JaxqcError("the chemistry checks need RDKit: pip install rdkit (the `chem` extra)") from None
    RDLogger.DisableLog("rdApp.*")  # its per-molecule warnings; failures are reported in `reason`
    return Chem, rdDetermineBonds


class Check(NamedTuple):
    """The verdict on one geometry: valid, its canonical SMILES ("" when no bond orders were found), the
    reason it is not valid ("" when it is), the number of fragments, the rings, and its bonds
    ((i, j, order) with order 1, 2, 3 or 1.5 for aromatic)."""

    valid: bool
    smiles: str
    reason: str
    n_fragments: int
    n_rings: int
    bonds: tuple


def _mol(Z, R):
    Chem, _ = _rdkit()
    mol = Chem.RWMol()
    conf = Chem.Conformer(len(Z))
    for i, (z, r) in enumerate(zip(Z, R)):
        mol.AddAtom(Chem.Atom(int(z)))
        conf.SetAtomPosition(i, [float(x) for x in r])
    mol.AddConformer(conf, assignId=True)
    return mol


def check(Z, R) -> Check:
    """The verdict on one molecule (Z [A] atomic numbers, zeros = padding; R [A, 3] Å)."""
    Chem, rdDetermineBonds = _rdkit()
    Z, R = np.asarray(Z), np.asarray(R, dtype=float)
    keep = Z > 0
    Z, R = Z[keep], R[keep]
    if len(Z) == 0:
        return Check(False, "", "no atoms", 0, 0, ())
    if not np.all(np.isfinite(R)):
        return Check(False, "", "non-finite coordinates", 0, 0, ())
    mol = _mol(Z, R)
    try:
        rdDetermineBonds.DetermineConnectivity(mol, useHueckel=False, charge=0)
    except Exception as err:  # RDKit raises plain exceptions (ValueError, RuntimeError)
        return Check(False, "", f"no connectivity: {err}", 0, 0, ())
    n_frag = len(Chem.GetMolFrags(mol))
    connectivity = tuple((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), 1.0) for b in mol.GetBonds())
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=0, allowChargedFragments=False)
        Chem.SanitizeMol(mol)
    except Exception:
        return Check(False, "", "no bond orders give standard valences (neutral, closed shell)", n_frag, 0,
                     connectivity)
    if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return Check(False, "", "charged or radical atoms", n_frag, 0, connectivity)
    bonds = tuple((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), float(b.GetBondTypeAsDouble())) for b in mol.GetBonds())
    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=False)
    n_rings = mol.GetRingInfo().NumRings()
    if n_frag != 1:
        return Check(False, smiles, f"{n_frag} fragments", n_frag, n_rings, bonds)
    return Check(True, smiles, "", 1, n_rings, bonds)


def canonical_smiles(smiles: str) -> str:
    """RDKit's canonical SMILES of a SMILES string without stereo ("" when RDKit cannot read it)."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    return "" if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def check_many(Z, R, progress=None) -> list[Check]:
    """check() of every molecule of padded arrays Z [N, A], R [N, A, 3] Å."""
    out = []
    for k in range(len(Z)):
        out.append(check(Z[k], R[k]))
        if progress is not None:
            progress(k + 1)
    return out


def formula(Z) -> str:
    """Hill formula of atomic numbers (padding ignored): C and H first, then alphabetical."""
    z = [int(x) for x in np.asarray(Z) if x > 0]
    counts = {SYMBOLS[k]: z.count(k) for k in set(z)}
    order = [s for s in ("C", "H") if s in counts] + sorted(s for s in counts if s not in ("C", "H"))
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)


def bond_lengths(Z, R, bonds) -> dict:
    """{bond type "C-H", "C=O", "C:C", ...: [lengths Å]} of one molecule's bonds (i, j, order)."""
    sym = {1.0: "-", 2.0: "=", 3.0: "#", 1.5: ":"}
    out: dict = {}
    for i, j, order in bonds:
        a, b = sorted((SYMBOLS[int(Z[i])], SYMBOLS[int(Z[j])]))
        out.setdefault(f"{a}{sym.get(order, '?')}{b}", []).append(float(np.linalg.norm(R[i] - R[j])))
    return out
