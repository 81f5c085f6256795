"""Run configuration: one validated dataclass, from YAML files and CLI overrides.

Every config is validated before any work starts: unknown keys, wrong types and impossible
values are one-line `MDPTError`s.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.guidance.module import GUIDANCE_KINDS, GuidanceConfig
from mdpt.policies.module import POLICY_ALGOS, PolicyConfig

MODES = ("joint", "guidance-first")
EVAL_VARIANTS = ("guided", "unguided", "random-guidance")
# The guidance a joint run trains with each policy, as published.
JOINT_GUIDANCE = {"dql": "dql-critic", "edp": "dql-critic", "idql": "iql", "cfg": "iql"}


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    algo: str | None = None  # None: a guidance module alone
    mode: str = "joint"
    guidance_kind: str | None = None
    guidance_path: str | None = None
    guidance_seed: int | None = None
    guidance_steps: int | None = None
    policy_path: str | None = None
    env: str | None = None
    steps: int = 100_000
    seeds: int = 1
    seed: int = 0
    batch_size: int = 256
    chunk: int = 1000
    checkpoint_every: int = 0  # steps; 0 = at every evaluation and at the end
    eval_every: int = 0
    eval_episodes: int = 10
    eval_max_steps: int | None = None  # cap evaluation episodes at this many env steps (None: the env's limit)
    eval_variants: tuple[str, ...] = ("guided",)
    selector: str = "softmax"
    beta: float = 1.0
    candidates: int = 50
    temperature: float = 0.5
    cfg_weight: float = 1.0
    reference: str = "d4rl"
    allow_data_mismatch: bool = False
    policy: dict = field(default_factory=dict)
    guidance: dict = field(default_factory=dict)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def resolved_guidance_kind(self) -> str:
        if self.guidance_kind:
            return self.guidance_kind
        if self.algo is None or self.mode == "guidance-first":
            return "iql"
        return JOINT_GUIDANCE[self.algo]

    def policy_config(self) -> PolicyConfig:
        return _build(PolicyConfig, {"algo": self.algo, **self.policy}, "policy").resolved()

    def guidance_config(self) -> GuidanceConfig:
        return _build(GuidanceConfig, {"kind": self.resolved_guidance_kind, **self.guidance}, "guidance").resolved()

    def validate(self) -> RunConfig:
        from mdpt.data.registry import REFERENCES

        positive = {"steps": self.steps, "seeds": self.seeds, "batch_size": self.batch_size, "chunk": self.chunk,
                    "eval_episodes": self.eval_episodes, "candidates": self.candidates}
        for name, value in positive.items():
            if value < 1:
                raise MDPTError(f"{name} must be >= 1, got {value}")
        if self.eval_max_steps is not None and self.eval_max_steps < 1:
            raise MDPTError(f"eval_max_steps must be >= 1, got {self.eval_max_steps}")
        for name in ("eval_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise MDPTError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.algo is not None and self.algo not in POLICY_ALGOS:
            raise MDPTError(f"unknown algo {self.algo!r}; use one of: {', '.join(POLICY_ALGOS)}")
        if self.mode not in MODES:
            raise MDPTError(f"unknown mode {self.mode!r}; use one of: {', '.join(MODES)}")
        if self.guidance_kind is not None and self.guidance_kind not in GUIDANCE_KINDS:
            raise MDPTError(f"unknown guidance kind {self.guidance_kind!r}; use one of: {', '.join(GUIDANCE_KINDS)}")
        if self.reference not in REFERENCES:
            raise MDPTError(f"unknown score reference {self.reference!r}; use one of: {', '.join(REFERENCES)}")
        bad = [v for v in self.eval_variants if v not in EVAL_VARIANTS]
        if bad:
            raise MDPTError(f"unknown eval variant {bad[0]!r}; use any of: {', '.join(EVAL_VARIANTS)}")
        if self.mode == "guidance-first" and self.guidance_kind == "dql-critic" and not self.guidance_path:
            raise MDPTError("guidance-first training needs a trained dql-critic via --guidance DIR, "
                            "or a policy-independent kind (iql, sarsa)")
        if self.guidance_path and self.mode == "joint" and self.algo is not None:
            raise MDPTError("--guidance DIR is for --mode guidance-first; joint training trains its own guidance")
        from mdpt.agent import SelectorConfig

        SelectorConfig(self.selector, self.beta, self.candidates, self.temperature, self.cfg_weight).validate(True)
        if self.algo is not None:
            pc = self.policy_config()
            if pc.algo == "cfg" and self.resolved_guidance_kind == "dql-critic":
                raise MDPTError("cfg policies need a guidance with V(s) for their labels: use iql or sarsa")
        self.guidance_config()
        return self

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval_variants"] = list(self.eval_variants)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        return _build(cls, d, where).validate()


def _build(cls, d: dict, where: str):
    """Instantiate a dataclass from a dict with strict key and type checks."""
    if not isinstance(d, dict):
        raise MDPTError(f"{where}: expected a mapping of settings, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise MDPTError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in d.items():
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise MDPTError(f"{where}: missing required key {missing[0]!r}")
    return cls(**values)


def _coerce(value, hint, where: str):
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
                return _coerce(value, arg, where)
            except MDPTError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise MDPTError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(v, args[0], where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise MDPTError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MDPTError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MDPTError(f"{where}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise MDPTError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise MDPTError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MDPTError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def set_dotted(d: dict, key: str, value, where: str) -> None:
    """d['a']['b'] = value for key 'a.b', creating mappings on the way."""
    node = d
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MDPTError(f"{where}: {p} is not a mapping")
    node[leaf] = value


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MDPTError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MDPTError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MDPTError(f"{path}: expected a mapping of settings at the top level")
    return data
