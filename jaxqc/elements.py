"""Chemical elements: symbols <-> atomic numbers, masses, and QM9's free-atom reference energies."""
from __future__ import annotations

import numpy as np

from .errors import ElementError
from .units import HARTREE_KCAL_MOL

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
MAX_Z = len(SYMBOLS) - 1  # 118
_Z_OF = {s.lower(): z for z, s in enumerate(SYMBOLS) if z > 0}

# Standard atomic weights (IUPAC, conventional values) in amu, for Z = 1..36 and iodine.
_MASSES_AMU = {
    1: 1.008, 2: 4.0026, 3: 6.94, 4: 9.0122, 5: 10.81, 6: 12.011, 7: 14.007, 8: 15.999, 9: 18.998,
    10: 20.180, 11: 22.990, 12: 24.305, 13: 26.982, 14: 28.085, 15: 30.974, 16: 32.06, 17: 35.45,
    18: 39.948, 19: 39.098, 20: 40.078, 21: 44.956, 22: 47.867, 23: 50.942, 24: 51.996, 25: 54.938,
    26: 55.845, 27: 58.933, 28: 58.693, 29: 63.546, 30: 65.38, 31: 69.723, 32: 72.630, 33: 74.922,
    34: 78.971, 35: 79.904, 36: 83.798, 53: 126.90,
}

# QM9 free-atom reference energies in Hartree (B3LYP/6-31G(2df,p), QM9's published atomref table),
# per thermodynamic quantity: U0 (0 K), U, H, G (298.15 K).
QM9_ATOM_REF_HA = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-insensitive); ElementError if unknown."""
    z = _Z_OF.get(str(symbol).strip().lower())
    if z is None:
        raise ElementError(f"unknown element symbol {symbol!r}")
    return z


def symbol(z: int) -> str:
    z = int(z)
    if not 1 <= z <= MAX_Z:
        raise ElementError(f"unknown atomic number {z}; expected 1..{MAX_Z}")
    return SYMBOLS[z]


def check_atomic_numbers(Z, where: str = "") -> None:
    """Raise ElementError unless every non-padding entry of Z is a real element (1..118)."""
    Z = np.asarray(Z)
    bad = Z[(Z < 0) | (Z > MAX_Z)]
    if bad.size:
        raise ElementError(f"{where}unknown atomic number {int(bad.flat[0])}; expected 1..{MAX_Z}")


def masses_amu(Z) -> np.ndarray:
    """Atomic masses in amu for an array of atomic numbers (0 = padding -> mass 1 to keep divisions safe)."""
    Z = np.asarray(Z)
    out = np.ones(Z.shape, dtype=np.float64)
    for z in np.unique(Z):
        if z == 0:
            continue
        if int(z) not in _MASSES_AMU:
            raise ElementError(f"no atomic mass tabulated for {symbol(z)} (Z={int(z)})")
        out[Z == z] = _MASSES_AMU[int(z)]
    return out


def qm9_atom_reference_kcal_mol(Z, quantity: str = "U0") -> np.ndarray:
    """Sum of QM9 free-atom energies (kcal/mol) per molecule; Z is [..., n_atoms] with 0 = padding."""
    table = QM9_ATOM_REF_HA[quantity]
    lut = np.zeros(MAX_Z + 1)
    for z, e in table.items():
        lut[z] = e * HARTREE_KCAL_MOL
    Z = np.asarray(Z)
    unknown = np.setdiff1d(np.unique(Z), [0, *table])
    if unknown.size:
        raise ElementError(f"no QM9 reference energy for {symbol(unknown[0])}; QM9 has H, C, N, O, F only")
    return lut[Z].sum(axis=-1)
