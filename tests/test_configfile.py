"""Config files (get_config() -> dict / dataclass / ConfigDict-like) and --set overrides."""
import pytest

from jaxqc.configfile import apply_sets, load_config_file, parse_value
from jaxqc.errors import JaxqcError


def write(tmp_path, text, name="cfg.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_dict_config(tmp_path):
    path = write(tmp_path, "import math\n\ndef get_config():\n"
                           "    return {'features': 64, 'cutoff_ang': math.sqrt(25.0), 'budget': {'epochs': 3}}\n")
    assert load_config_file(path) == {"features": 64, "cutoff_ang": 5.0, "budget": {"epochs": 3}}


def test_a_frozen_dataclass_config(tmp_path):
    path = write(tmp_path, "import dataclasses\n\n@dataclasses.dataclass(frozen=True)\nclass Train:\n"
                           "    lr: float = 1e-3\n\n@dataclasses.dataclass(frozen=True)\nclass C:\n"
                           "    features: int = 32\n    sizes: tuple = (8, 16)\n"
                           "    train: Train = Train()\n\ndef get_config():\n    return C()\n")
    assert load_config_file(path) == {"features": 32, "sizes": (8, 16), "train": {"lr": 1e-3}}


def test_a_configdict_like_mapping(tmp_path):
    """ml_collections.ConfigDict is not a dict but has to_dict(); nested ones are converted too."""
    path = write(tmp_path, "class ConfigDict:\n    def __init__(self, **kw):\n        self._d = kw\n"
                           "    def to_dict(self):\n"
                           "        return {k: v.to_dict() if isinstance(v, ConfigDict) else v "
                           "for k, v in self._d.items()}\n\n"
                           "def get_config():\n    return ConfigDict(lr=0.01, train=ConfigDict(epochs=5))\n")
    assert load_config_file(path) == {"lr": 0.01, "train": {"epochs": 5}}


@pytest.mark.parametrize("text, message", [
    ("def get_config(:\n    return {}\n", r"cfg.py:1: syntax error"),
    ("x = 1\n", "defines no get_config"),
    ("get_config = 3\n", "defines no get_config"),
    ("def get_config():\n    return [1, 2]\n", "must return a dict, a dataclass or a ConfigDict, not list"),
    ("def get_config():\n    return 1 / 0\n", "failed: ZeroDivisionError"),
    ("import no_such_module_xyz\n", "failed: ModuleNotFoundError"),
])
def test_bad_config_files_give_one_line_errors(tmp_path, text, message):
    with pytest.raises(JaxqcError, match=message) as err:
        load_config_file(write(tmp_path, text))
    assert "\n" not in str(err.value) and "cfg.py" in str(err.value)


def test_a_missing_config_file(tmp_path):
    with pytest.raises(JaxqcError, match="no such config file"):
        load_config_file(tmp_path / "absent.py")


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("64", 64), ("True", True), ("None", None), ("(8, 16)", (8, 16)), ("[1, 2]", [1, 2]),
    ("'cm'", "cm"), ("cm", "cm"), ("bob-of-bonds", "bob-of-bonds"), ("", ""), ("{'a': 1}", {"a": 1}),
])
def test_values_are_python_literals_or_strings(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_sets_override_nest_and_do_not_mutate():
    base = {"features": 64, "budget": {"epochs": 10, "train": {"lr": 5e-4}}}
    out = apply_sets(base, ["features=32", "budget.train.lr=1e-3", "budget.train.batch_size=16",
                            "new.deep.key=x", "representation=bob"])
    assert out == {"features": 32, "budget": {"epochs": 10, "train": {"lr": 1e-3, "batch_size": 16}},
                   "new": {"deep": {"key": "x"}}, "representation": "bob"}
    assert base == {"features": 64, "budget": {"epochs": 10, "train": {"lr": 5e-4}}}
    assert apply_sets(base, ["features=1", "features=2"])["features"] == 2  # in order: the last wins
    assert apply_sets(base, ["expr=a=b"])["expr"] == "a=b"  # only the first '=' splits
    assert apply_sets(base, []) == base


@pytest.mark.parametrize("item, message", [
    ("features", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"), ("budget..lr=1", "expected KEY=VALUE"),
    ("features.x=1", "features is 64, not a group"),
])
def test_bad_sets(item, message):
    with pytest.raises(JaxqcError, match=message):
        apply_sets({"features": 64}, [item])
