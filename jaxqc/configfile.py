"""Settings from Python config files (`--config FILE.py`) and `--set key=value` overrides.

A config file defines `get_config()` returning a dict, a dataclass instance or a mapping with `to_dict()`
(ml_collections.ConfigDict); `load_config_file` turns it into a plain nested dict. `apply_sets` applies
`--set` overrides (dotted keys into nested dicts, values as Python literals). Checking the keys against
a model's settings is the caller's job (ModelSpec.make_config names unknown ones).

    # my_config.py
    def get_config():
        return {"features": 64, "budget": {"epochs": 100, "train": {"lr": 1e-3}}}

    jaxqc train schnet --config my_config.py --set budget.train.lr=5e-4 --set features=32 ...
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import sys
import types
from collections.abc import Mapping
from pathlib import Path

from .errors import JaxqcError


def to_dict(value, where: str) -> dict:
    """A plain nested dict of a dict / dataclass instance / mapping (ConfigDict: its to_dict())."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_dict(v, where) if isinstance(v, Mapping) or _is_instance(v) else v
                for k, v in value.items()}
    raise JaxqcError(f"{where}: get_config() must return a dict, a dataclass or a ConfigDict, "
                     f"not {type(value).__name__}")


def _is_instance(v) -> bool:
    return (dataclasses.is_dataclass(v) and not isinstance(v, type)) or callable(getattr(v, "to_dict", None))


def load_config_file(path) -> dict:
    """The settings dict of a Python config file's get_config(); a one-line JaxqcError for a missing file,
    a syntax error (with its line), a file that fails to run, no get_config, or a wrong return type."""
    path = Path(path)
    if not path.is_file():
        raise JaxqcError(f"{path}: no such config file")
    try:
        code = compile(path.read_text(), str(path), "exec")
    except SyntaxError as err:
        raise JaxqcError(f"{path}:{err.lineno}: syntax error in the config file: {err.msg}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise JaxqcError(f"{path}: cannot read the config file ({err})") from None
    module = types.ModuleType(f"jaxqc_config_{path.stem}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses (and pickle) look the defining module up
    try:
        exec(code, module.__dict__)  # noqa: S102 - a config file is Python the user runs on purpose
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise JaxqcError(f"{path}: the config file defines no get_config() function")
        value = get_config()
    except JaxqcError:
        raise
    except Exception as err:  # the file's own bug: one line, not a traceback
        raise JaxqcError(f"{path}: the config file failed: {type(err).__name__}: {err}") from None
    return to_dict(value, str(path))


def parse_value(text: str):
    """A Python literal (1e-3, 64, (8, 16), True, None, 'a') or, failing that, the string itself."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def apply_sets(config: dict, sets: list[str]) -> dict:
    """A copy of `config` with each `key=value` of `sets` applied in order; dotted keys (train.lr=1e-3)
    set nested dicts, creating them where absent. Whether a key is known is the caller's check."""
    out = copy.deepcopy(dict(config))
    for item in sets or []:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise JaxqcError(f"--set {item!r}: expected KEY=VALUE (e.g. --set lr=1e-3 or --set train.lr=1e-3)")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part.strip(), {})
            if not isinstance(child, dict):
                raise JaxqcError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} is {child!r}, not a group of "
                                 f"settings")
            node = child
        node[parts[-1].strip()] = parse_value(text)
    return out
