import pytest

from jaxqc import units as U
from jaxqc.errors import UnitError


def test_energy_factors_are_consistent():
    # 1 Ha = 27.211386 eV: both routes to kcal/mol agree
    assert U.energy_factor("Ha") == pytest.approx(U.HARTREE_EV * U.energy_factor("eV"), rel=1e-9)
    assert U.energy_factor("meV") * 1000 == pytest.approx(U.energy_factor("eV"))
    assert U.energy_factor("kJ/mol") * 4.184 == pytest.approx(1.0)
    assert 1 / U.energy_factor("meV") == pytest.approx(43.364, abs=1e-3)  # 1 kcal/mol = 43.36 meV


def test_force_and_length_factors():
    assert U.force_factor("eV/Å") == pytest.approx(U.EV_KCAL_MOL)
    assert U.force_factor("eV/Ang") == U.force_factor("eV/Å")
    assert U.force_factor("Ha/bohr") == pytest.approx(U.HARTREE_KCAL_MOL / U.BOHR_ANG)
    assert U.force_factor("kcal/mol/Å") == 1.0
    assert U.length_factor("nm") == 10.0


@pytest.mark.parametrize("bad", ["furlong", "", "kcal"])
def test_unknown_energy_unit(bad):
    with pytest.raises(UnitError, match="unknown energy unit"):
        U.energy_factor(bad)


@pytest.mark.parametrize("bad", ["eV", "eV/parsec", "joule/Å"])
def test_unknown_force_unit(bad):
    with pytest.raises(UnitError, match="unknown force unit"):
        U.force_factor(bad)
