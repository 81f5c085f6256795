"""Command-line flags derived from the settings tree (`mdpt.experiments.config.RunConfig`).

Every leaf setting `a.b_c` becomes a flag `--a.b-c VALUE` with its help text and default (a
preset's values are listed per algorithm or guidance kind); a leaf that declares aliases also gets
them (`--eval-every`, `--beta`, `--guidance`, ...). Values are parsed as YAML scalars and then
checked by the same code that checks YAML files, so a flag and a `--set` item behave alike.

Why not tyro: it would take over the parser (the one-line error contract, exit codes and the
existing flag names), and the tree needs only this much: ~100 lines, no dependency.
"""

from __future__ import annotations

import argparse
import typing

from mdpt import presets
from mdpt.errors import MDPTError
from mdpt.settings import check_count, check_number, leaves, set_dotted, shown

DEST = "cfg:"
SECTION_HELP = {"policy": "policy", "guidance": "guidance", "stage1": "stage1", "selector": "selector",
                "eval": "eval", "divergence": "divergence", "log": "log"}


def _preset_default(name: str) -> str | None:
    """'dql 1.0, idql 0.0, ...' for a policy setting; per guidance kind for a guidance setting."""
    section, _, key = name.partition(".")
    if section == "policy":
        values = {a: v["policy"].get(key) for a, v in presets.ALGORITHMS.items()}
    elif section == "guidance":
        values = {k: {**presets.GUIDANCE_COMMON, **presets.GUIDANCE[k]}.get(key) for k in presets.GUIDANCE}
        if key == "kind":
            return "dql/edp joint: dql-critic; idql, cfg, guidance-first and guidance alone: iql"
    elif section == "selector" and key in ("selector", "beta"):
        return ("the guidance's own (iql/sarsa: softmax beta 0.5; dql-critic: softmax with the task's beta, "
                "e.g. hopper-medium 100)")
    elif section == "selector":
        values = {a: v["selector"].get(key) for a, v in presets.ALGORITHMS.items()}
    else:
        return None
    if len(set(map(str, values.values()))) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{k} {v}" for k, v in values.items())


def _default_text(name: str, field) -> str:
    if field.metadata.get("preset"):
        return f"preset: {_preset_default(name)}"
    default = field.default
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _metavar(hint, field) -> str:
    choices = field.metadata.get("choices")
    if choices and typing.get_origin(hint) is not tuple:
        return "{" + ",".join(map(str, choices)) + "}"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if typing.get_origin(base) is tuple:
        return "A,B"
    return {int: "N", float: "X", bool: "BOOL", str: "TEXT"}.get(base, "VALUE")


def add_config_flags(parser: argparse.ArgumentParser, include=lambda name: True, hide_sections=()) -> None:
    """Add a flag for every leaf of RunConfig for which `include(name)` holds."""
    from mdpt.experiments.config import RunConfig

    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, field, hint in leaves(RunConfig):
        if not include(name) or name == "preset":
            continue
        section = name.split(".")[0] if "." in name else ""
        group = parser
        if section:
            if section not in groups:
                groups[section] = parser.add_argument_group(f"{section} settings (--{section}.KEY)")
            group = groups[section]
        flags = [f"--{name.replace('_', '-')}"]
        flags += [f"--{a.replace('_', '-')}" for a in field.metadata.get("alias", ()) if f"--{a}" not in flags]
        is_bool = hint is bool
        help_text = f"{field.metadata.get('help', '')} (default: {_default_text(name, field)})".replace("%", "%%")
        kwargs = {"dest": DEST + name, "default": argparse.SUPPRESS, "help": help_text,
                  "metavar": _metavar(hint, field)}
        if is_bool:
            kwargs.update(nargs="?", const="true")
        group.add_argument(*dict.fromkeys(flags), **kwargs)


class Checked:
    """An argparse `type` for a number within [lo, hi]: a flag's value that is not one (NaN, infinity,
    a fraction where a count is due, out of range) is a one-line usage error before any work starts.
    Every numeric flag of `mdpt` uses one (tests/test_reliability_numbers.py fuzzes them all)."""

    def __init__(self, kind: type, lo: float, hi: float, why: str = ""):
        self.kind, self.lo, self.hi, self.why = kind, lo, hi, why
        self.__name__ = "count" if kind is int else "number"

    def __call__(self, raw: str):
        try:
            try:
                value = int(raw.strip())
            except ValueError:
                value = float(raw.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shown(raw)}") from None
        try:
            if self.kind is int:
                return check_count(value, "the value", int(self.lo), int(self.hi), self.why)
            return check_number(value, "the value", self.lo, self.hi, self.why)
        except MDPTError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("the value ")) from None


def count(lo: int = 1, hi: int = 2**31 - 1, why: str = "") -> Checked:
    """A whole number in lo..hi (default: a positive 32-bit count)."""
    return Checked(int, lo, hi, why)


def number(lo: float, hi: float, why: str = "") -> Checked:
    """A finite number in lo..hi."""
    return Checked(float, lo, hi, why)


SEED = count(0, 2**31 - 1, "seeds are 32-bit")


def config_from_flags(args: argparse.Namespace) -> dict:
    """The nested settings the user gave as flags (values parsed as YAML scalars, strings kept)."""
    import yaml

    from mdpt.experiments.config import RunConfig

    hints = {name: hint for name, _, hint in leaves(RunConfig)}
    out: dict = {}
    for dest, raw in vars(args).items():
        if not dest.startswith(DEST):
            continue
        name = dest[len(DEST):]
        value = raw
        if not _is_str(hints[name]):
            try:
                value = yaml.safe_load(raw) if isinstance(raw, str) else raw
            except (yaml.YAMLError, RecursionError):  # kept as text: the type check refuses it in one line
                value = raw
        set_dotted(out, name, value, f"--{name}")
    return out


def _is_str(hint) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return all(a is str for a in args)
