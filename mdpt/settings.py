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
import numbers
import os
import reprlib
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


def unalias(cls, d: dict, where: str = "settings") -> dict:
    """A nested mapping with flat aliases (`eval_every: 5`) moved to their place (`eval: {every: 5}`).
    One mapping that names a setting twice (`eval_every: 5` and `eval: {every: 10}`, or two aliases
    of it) is refused: which one was meant is not for key order to decide."""
    table = aliases(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict = {}
    named: dict[str, str] = {}  # dotted setting -> the key that set it
    for key, value in d.items():
        if key in table and key not in fields:
            _once(named, table[key], str(key), where)
            set_dotted(out, table[key], value, key)
        else:
            if isinstance(value, dict):
                for sub in value:
                    if isinstance(sub, str) and f"{key}.{sub}" in table.values():
                        _once(named, f"{key}.{sub}", f"{key}.{sub}", where)
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key].update(copy.deepcopy(value))
            else:
                out[key] = copy.deepcopy(value)
    return out


def _once(named: dict[str, str], setting: str, key: str, where: str) -> None:
    if setting in named:
        raise MDPTError(f"{where}: {named[setting]} and {key} both set {setting}; keep one of them")
    named[setting] = key


def check_count(value, name: str, lo: int = 1, hi: int = 2**31 - 1, why: str = "") -> int:
    """`value` as a whole number in lo..hi, else a one-line MDPTError naming `name` (for arguments of the
    Python API and the command line's numeric flags alike)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and _finite(value)
                                                    and value == int(value))
    if isinstance(value, bool) or not whole:
        raise MDPTError(f"{name} must be a whole number, got {shown(value)}")
    value = int(value)
    if not lo <= value <= hi:
        raise MDPTError(f"{name} must be in {lo}..{hi}{f' ({why})' if why else ''}, got {value}")
    return value


def check_number(value, name: str, lo: float, hi: float, why: str = "") -> float:
    """`value` as a finite number in lo..hi, else a one-line MDPTError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MDPTError(f"{name} must be a number, got {shown(value)}")
    if not (_finite(value) and lo <= value <= hi):
        raise MDPTError(f"{name} must be a finite number in {lo:g}..{hi:g}{f' ({why})' if why else ''}, "
                        f"got {shown(value)}")
    return float(value)


def _finite(value) -> bool:
    """A number that is finite as a float (an integer too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def env_number(name: str, default: float, lo: float, hi: float, unit: str = "") -> float:
    """The number environment variable `name` holds (`default` when unset or empty), checked like a flag."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = None
    if value is None or not (math.isfinite(value) and lo <= value <= hi):
        raise MDPTError(f"{name}={shown(raw)}: expected a number{f' of {unit}' if unit else ''} in {lo:g}..{hi:g}; "
                        f"unset it for the default ({default:g})")
    return value


MAX_NODES = 100_000  # values a settings file may hold, counted as written out (aliases expanded)
MAX_DEPTH = 32  # levels of nesting (settings have three; a sweep grid's values one more)


def check_size(data, where: str, limit: int = MAX_NODES) -> None:
    """Refuse a structure that expands to more than `limit` values (a YAML file whose aliases nest,
    e.g. nine lines that expand to 10^9 strings), counted as written out and stopping at the limit, or
    that nests deeper than MAX_DEPTH."""
    seen = 0
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > limit:
            raise MDPTError(f"{where}: more than {limit} values once its aliases (&name / *name) are expanded; "
                            "a settings file holds far fewer: write it out without nested aliases")
        if depth > MAX_DEPTH:
            raise MDPTError(f"{where}: nested more than {MAX_DEPTH} levels deep; settings nest a few levels")
        if isinstance(node, dict):
            stack.extend((x, depth + 1) for x in (*node.keys(), *node.values()))
        elif isinstance(node, list | tuple):
            stack.extend((x, depth + 1) for x in node)


def shown(value, limit: int = 80) -> str:
    """`repr(value)` for a message, cut to about `limit` characters (without building a long repr)."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    r.maxlevel = 3
    return cut(r.repr(value), limit)


def cut(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
        raise MDPTError(f"{where}: unknown key {shown(unknown[0])}; known keys: {', '.join(fields)}")
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
            raise MDPTError(f"{where}: expected a list, got {type(value).__name__} {shown(value)}")
        return tuple(coerce(v, args[0], where, choices) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise MDPTError(f"{where}: expected true/false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MDPTError(f"{where}: expected an integer, got {shown(value)}")
        out = value
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MDPTError(f"{where}: expected a number, got {shown(value)}")
        if not _finite(value):
            raise MDPTError(f"{where}: expected a finite number, got {shown(value)}")
        out = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise MDPTError(f"{where}: expected a string, got {shown(value)}")
        out = value
    elif hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MDPTError(f"{where}: expected a mapping, got {shown(value)}")
        return value
    else:
        return value
    if choices and out not in choices:
        name = where.rsplit(".", 1)[-1].replace("_", " ")
        raise MDPTError(f"{where}: unknown {name} {shown(out)}; use one of: {', '.join(map(str, choices))}")
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
