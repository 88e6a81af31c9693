"""Physical constants and unit conversions (CODATA 2018).

Inside jaxqc: lengths in Å, energies in kcal/mol, forces in kcal/mol/Å, time in fs, masses in amu.
Readers convert once at load with the factors below; writers record the unit they wrote.
"""
from __future__ import annotations

from .errors import UnitError

HARTREE_KCAL_MOL = 627.5094740631  # 1 Ha in kcal/mol
EV_KCAL_MOL = 23.060547830619026  # 1 eV in kcal/mol
KJ_MOL_KCAL_MOL = 1.0 / 4.184  # 1 kJ/mol in kcal/mol
BOHR_ANG = 0.529177210903  # 1 bohr in Å
KB_KCAL_MOL_K = 0.0019872042586408316  # Boltzmann constant in kcal/mol/K
KB_EV_K = 8.617333262e-5
HARTREE_EV = 27.211386245988
# kinetic energy: amu * (Å/fs)^2 in kcal/mol
AMU_ANG2_FS2_KCAL_MOL = 2390.057361376673

# energy unit -> factor to kcal/mol
_ENERGY = {
    "kcal/mol": 1.0,
    "kcal mol-1": 1.0,
    "ev": EV_KCAL_MOL,
    "mev": EV_KCAL_MOL * 1e-3,
    "ha": HARTREE_KCAL_MOL,
    "hartree": HARTREE_KCAL_MOL,
    "kj/mol": KJ_MOL_KCAL_MOL,
}
# length unit -> factor to Å
_LENGTH = {"å": 1.0, "ang": 1.0, "angstrom": 1.0, "a": 1.0, "bohr": BOHR_ANG, "nm": 10.0}

ENERGY_UNITS = ("kcal/mol", "eV", "meV", "Ha", "kJ/mol")
LENGTH_UNITS = ("Å", "Ang", "bohr", "nm")


def energy_factor(unit: str) -> float:
    """Factor that converts energies in `unit` to kcal/mol."""
    key = str(unit).strip().lower()
    if key not in _ENERGY:
        raise UnitError(f"unknown energy unit {unit!r}; expected one of {', '.join(ENERGY_UNITS)}")
    return _ENERGY[key]


def length_factor(unit: str) -> float:
    """Factor that converts lengths in `unit` to Å."""
    key = str(unit).strip().lower()
    if key not in _LENGTH:
        raise UnitError(f"unknown length unit {unit!r}; expected one of {', '.join(LENGTH_UNITS)}")
    return _LENGTH[key]


def force_factor(unit: str) -> float:
    """Factor that converts forces in `unit` (energy/length, e.g. 'eV/Å', 'Ha/bohr') to kcal/mol/Å."""
    text = str(unit).strip()
    if "/" not in text:
        raise UnitError(f"unknown force unit {unit!r}; expected energy/length such as 'eV/Å' or 'kcal/mol/Å'")
    energy, length = text.rsplit("/", 1)
    try:
        return energy_factor(energy) / length_factor(length)
    except UnitError as err:
        raise UnitError(f"unknown force unit {unit!r} ({err})") from None
