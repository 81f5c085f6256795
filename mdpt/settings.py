"""Typed settings: dataclass fields that carry their own help, aliases and choices, and the one
strict builder that turns nested mappings (YAML, `--set a.b=v`, JSON) into dataclass trees.

A field declared with `setting(...)` documents itself: the command line derives its flags and
`--help` text from these fields (`mdpt.cli.flags`), `mdpt config show` prints them, and
`build()` refuses unknown keys, wrong types, NaN and infinity with a one-line error.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from typing import Any

from mdpt.errors import MDPTError

PRESET = "preset"  # the help text's word for "filled from mdpt.presets"


def setting(default: Any = None, help: str = "", *, alias: str | tuple[str, ...] = (), choices: tuple = (),
            preset: bool = False, factory=None):
    """A dataclass field with documentation. `preset=True`: None means "from mdpt.presets"."""
    meta = {"help": help, "alias": (alias,) if isinstance(alias, str) else tuple(alias),
            "choices": tuple(choices), "preset": preset}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def is_tree(cls) -> bool:
    return dataclasses.is_dataclass(cls) and isinstance(cls, type)


def leaves(cls, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted name, field, type hint) of every leaf setting of a dataclass tree, in order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if is_tree(hint):
            yield from leaves(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


def aliases(cls) -> dict[str, str]:
    """alias -> dotted name for every leaf that declares one (e.g. 'eval_every' -> 'eval.every')."""
    out = {}
    for name, f, _ in leaves(cls):
        for a in f.metadata.get("alias", ()):
            out[a.lstrip("-").replace("-", "_")] = name
    return out


def unalias(cls, d: dict) -> dict:
    """A nested mapping with flat aliases (`eval_every: 5`) moved to their place (`eval: {every: 5}`)."""
    table = aliases(cls)
    out: dict = {}
    for key, value in d.items():
        if key in table and key not in {f.name for f in dataclasses.fields(cls)}:
            set_dotted(out, table[key], value, key)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(copy.deepcopy(value))
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(d: dict, key: str, value, where: str) -> None:
    """d['a']['b'] = value for key 'a.b', creating mappings on the way."""
    node = d
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MDPTError(f"{where}: {p} is not a mapping")
    node[leaf] = value


def build(cls, d: dict, where: str):
    """Instantiate a dataclass tree from a nested mapping with strict key and type checks."""
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise MDPTError(f"{where}: expected a mapping of settings, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise MDPTError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in d.items():
        hint = hints[key]
        here = f"{where}.{key}"
        if is_tree(hint):
            values[key] = build(hint, {} if value is None else value, here)
        else:
            values[key] = coerce(value, hint, here, fields[key].metadata.get("choices", ()))
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise MDPTError(f"{where}: missing required key {missing[0]!r}")
    return cls(**values)


def coerce(value, hint, where: str, choices: tuple = ()):
    """`value` checked against a type hint (and choices); numbers must be finite."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where, choices)
            except MDPTError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise MDPTError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(coerce(v, args[0], where, choices) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise MDPTError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MDPTError(f"{where}: expected an integer, got {value!r}")
        out = value
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MDPTError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise MDPTError(f"{where}: expected a finite number, got {value!r}")
        out = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise MDPTError(f"{where}: expected a string, got {value!r}")
        out = value
    elif hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MDPTError(f"{where}: expected a mapping, got {value!r}")
        return value
    else:
        return value
    if choices and out not in choices:
        name = where.rsplit(".", 1)[-1].replace("_", " ")
        raise MDPTError(f"{where}: unknown {name} {out!r}; use one of: {', '.join(map(str, choices))}")
    return out


def to_dict(obj) -> dict:
    """A dataclass tree as nested plain data (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    return plain(obj)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
