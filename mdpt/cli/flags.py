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
from mdpt.settings import leaves, set_dotted

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
            except yaml.YAMLError:
                value = raw
        set_dotted(out, name, value, f"--{name}")
    return out


def _is_str(hint) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return all(a is str for a in args)
