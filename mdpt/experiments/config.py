"""The run configuration: one typed tree, resolved from presets, YAML, flags and `--set` items.

    RunConfig
      dataset, env, algo, mode, steps, seeds, seed, batch_size, chunk, checkpoint_every, ...
      policy:     PolicyConfig      (mdpt.policies.module)
      guidance:   GuidanceConfig    (mdpt.guidance.module)
      stage1:     Stage1Config      where a guidance-first run's frozen guidance comes from
      selector:   SelectorConfig    (mdpt.agent) how evaluation picks among candidate actions
      eval:       EvalConfig        when and how the run evaluates itself
      divergence: DivergenceConfig  the value check of every run
      log:        LogConfig         where metrics go

`resolve_config(settings)` is the one loader: presets for (algo, mode, guidance kind, dataset)
(mdpt.presets) under the user's settings; every key and value is validated before any work
starts, with a one-line `MDPTError`. Flat aliases (`eval_every`, `beta`, `guidance_kind`, ...)
are accepted wherever a nested key is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mdpt import presets
from mdpt.agent import MAX_CANDIDATES, SELECTION_LIMITS, SelectorConfig
from mdpt.errors import MDPTError
from mdpt.evaluation.api import MAX_EPISODES, VARIANTS
from mdpt.guidance.module import GuidanceConfig
from mdpt.policies.module import POLICY_ALGOS, PolicyConfig
from mdpt.settings import build, check_size, flatten, set_dotted, setting, shown, to_dict, unalias

MODES = ("joint", "guidance-first")
REFERENCES = ("d4rl", "dataset", "raw")
MODEL_SELECTION = ("online", "bc-loss")
DIVERGENCE_ACTIONS = ("stop", "warn", "off")
LOGGERS = ("jsonl", "tensorboard", "wandb")
MAX_STEPS = 100_000_000  # the step counters are int32; no run of this field needs more
MAX_SEEDS = 4096  # seeds are trained vmapped in one program
_STEPS = (MAX_STEPS, "step counts stop there: the step counters are int32 and no run needs more")
_WIDTH = (65_536, "a network width")
_DEPTH = (256, "a network depth")
# The upper bound of every integer setting, and why (RunConfig.validate; none may be negative, and
# higher lower bounds are checked where each setting is used). A test fails for an integer setting that has none.
INT_LIMITS: dict[str, tuple[int, str]] = {
    "steps": (MAX_STEPS, "split a longer run into runs"),
    "checkpoint_every": _STEPS, "eval.every": _STEPS, "stage1.guidance_steps": _STEPS, "stage1.unfreeze_at": _STEPS,
    "policy.lr_decay_steps": _STEPS, "guidance.lr_decay_steps": _STEPS, "policy.ema_start": _STEPS,
    "policy.ema_every": _STEPS, "guidance.update_every": _STEPS,
    "divergence.patience": (1_000_000, "chunks in a row"),
    "seeds": (MAX_SEEDS, "seeds are trained vmapped in one program"),
    "seed": (2**31 - 1, "seeds are 32-bit"),
    "stage1.guidance_seed": (MAX_SEEDS - 1, "an index into a guidance module's seeds"),
    "batch_size": (2**20, "sampled per step and seed"),
    "chunk": (1_000_000, "steps per compiled call, whose metrics are kept per step"),
    "selector.candidates": (MAX_CANDIDATES, "a policy sample per candidate, env and seed"),
    "eval.episodes": (MAX_EPISODES, "one simulator per episode and seed, stepped at once"),
    "eval.final_episodes": (MAX_EPISODES, "one simulator per episode and seed, stepped at once"),
    "eval.curve_candidates": (MAX_CANDIDATES, "a policy sample per candidate, env and seed"),
    "eval.max_steps": (1_000_000, "env steps per episode; the bullet envs end episodes at 1000"),
    "policy.hidden": _WIDTH, "guidance.hidden": _WIDTH, "policy.depth": _DEPTH, "guidance.depth": _DEPTH,
    "policy.T": (10_000, "diffusion steps"), "policy.time_dim": (4096, "the time embedding's width"), "policy.sample_steps": (10_000, "sampler network calls"),
    "guidance.backup_samples": (MAX_CANDIDATES, "next actions sampled per state"),
}
_LR = (10.0, "a learning rate")
_CLIP = (1e12, "a gradient norm")
_DECAY = (1e3, "a weight decay")
# The largest magnitude of every float setting, and why (RunConfig.validate; the ranges that matter,
# e.g. a probability in [0, 1), are checked where each setting is used): past these, values overflow
# float32 in training or sampling. A test fails for a float setting that has none.
FLOAT_LIMITS: dict[str, tuple[float, str]] = {
    "policy.dropout": (1.0, "a probability"), "policy.cond_dropout": (1.0, "a probability"),
    "policy.beta_min": (1e3, "a diffusion noise rate"), "policy.beta_max": (1e3, "a diffusion noise rate"),
    "policy.eta": (1e6, "the Q term's weight"), "policy.awr_temperature": (1e3, "the exponent's scale of the AWR weights"),
    "policy.awr_weight_max": (1e6, "the AWR weights' clip"), "policy.lr": _LR, "guidance.lr": _LR,
    "policy.grad_clip": _CLIP, "guidance.grad_clip": _CLIP, "policy.weight_decay": _DECAY,
    "guidance.weight_decay": _DECAY, "policy.ema_decay": (1.0, "a decay"), "guidance.tau": (1.0, "a decay"),
    "policy.cond_bins": (1e6, "a normalized return"), "guidance.expectile": (1.0, "an expectile"),
    "guidance.discount": (1.0, "a discount"), "divergence.margin": (1e12, "a factor on the value bound"),
    **{f"selector.{k}": (v, "beta * Q, the noise or the cfg mixture overflow float32")
       for k, v in SELECTION_LIMITS.items()},
}


@dataclass(frozen=True)
class Stage1Config:
    """Where the guidance of a guidance-first run comes from, and when it is unfrozen."""

    guidance_path: str | None = setting(None, "a trained guidance module to freeze (None: train one first in "
                                        "RUN/guidance-run; 'random': an untrained one, the necessity control)",
                                        alias=("guidance", "guidance_path"))
    guidance_seed: int | None = setting(None, "use this seed index of the guidance module for every policy seed",
                                        alias="guidance_seed")
    guidance_steps: int | None = setting(None, "steps of the guidance trained first (None: --steps)",
                                         alias="guidance_steps")
    next_actions: str = setting("bc", "dql-critic trained alone: next actions from a behaviour-cloned diffusion "
                                "policy trained alongside (bc), an untrained actor with a frozen target critic "
                                "(untrained: the paper's script), or a trained policy directory",
                                alias=("policy", "policy_path"))
    unfreeze_at: int | None = setting(None, "policy step at which the frozen guidance starts training jointly "
                                      "(the authors' scripts: 100000; None: never)")


@dataclass(frozen=True)
class EvalConfig:
    every: int = setting(0, "evaluate every K steps (0: at the end only)", alias="eval_every")
    episodes: int = setting(10, "episodes per seed and evaluation", alias="eval_episodes")
    max_steps: int | None = setting(None, "cap evaluation episodes at this many env steps (None: the env's limit)",
                                    alias="eval_max_steps")
    variants: tuple[str, ...] = setting(("guided",), "guided, unguided (plain sampling), random-guidance",
                                        alias="eval_variants", choices=VARIANTS)
    reference: str = setting("d4rl", "normalized-score reference: d4rl (D4RL's infos.py constants), dataset "
                             "(the data's own ref_min/max_score; Minari ids' preset) or raw (returns); data "
                             "without the one asked for is scored on its own reference, else raw, and says so",
                             alias="reference", choices=REFERENCES)
    model_selection: str = setting("online", "which checkpoint the summary calls selected: online (best score) or "
                                   "bc-loss (lowest training BC loss, Diffusion-QL's offline selection)",
                                   choices=MODEL_SELECTION)
    final_episodes: int | None = setting(None, "episodes of the last evaluation (None: as the others); curves on "
                                         "fewer episodes, the final point on the full protocol")
    curve_candidates: int | None = setting(None, "candidates of the evaluations before the last (None: "
                                           "selector.candidates)")
    snapshots: bool = setting(False, "save the artifacts at every evaluation (snapshots/step-N/), for "
                              "step-matched guidance swaps")


@dataclass(frozen=True)
class DivergenceConfig:
    """|Q| past max |r| / (1 - gamma) times `margin` is a diverging critic, not a result."""

    action: str = setting("stop", "stop (keep the last good checkpoint), warn, or off", choices=DIVERGENCE_ACTIONS)
    margin: float = setting(1.5, "tolerance factor on the bound max |r| / (1 - gamma)")
    patience: int = setting(2, "chunks past the bound, still growing, before a stop")


@dataclass(frozen=True)
class LogConfig:
    backends: tuple[str, ...] = setting(("jsonl",), "metrics sinks: jsonl (always), tensorboard, wandb",
                                        choices=LOGGERS)
    wandb_project: str = setting("mdpt", "Weights & Biases project")


@dataclass(frozen=True)
class RunConfig:
    dataset: str = setting(None, "dataset id (bullet-{env}-{quality}-v0) or an HDF5 path")
    algo: str | None = setting(None, "dql | idql | edp | cfg, or a baseline: bc | awr (IQL's policy extraction); "
                               "none trains a guidance module alone", choices=POLICY_ALGOS)
    mode: str = setting("joint", "joint (as published) or guidance-first (frozen guidance)", choices=MODES)
    env: str | None = setting(None, "environment for a dataset path without env_id in its attrs")
    steps: int = setting(100_000, "gradient steps")
    seeds: int = setting(1, "seeds, trained vmapped in one program")
    seed: int = setting(0, "first seed (seeds are SEED..SEED+S-1)")
    batch_size: int = setting(256, "minibatch size")
    chunk: int = setting(1000, "steps per compiled call (metrics come back once per chunk)")
    checkpoint_every: int = setting(0, "steps between checkpoints (0: at every evaluation and at the end)")
    allow_data_mismatch: bool = setting(False, "use a guidance module trained on other data (recorded)")
    policy: PolicyConfig = setting(help="the diffusion policy", factory=PolicyConfig)
    guidance: GuidanceConfig = setting(help="the guidance module (value estimator)", factory=GuidanceConfig)
    stage1: Stage1Config = setting(help="guidance-first: the frozen guidance", factory=Stage1Config)
    selector: SelectorConfig = setting(help="selection among candidate actions at evaluation", factory=SelectorConfig)
    eval: EvalConfig = setting(help="evaluation during and after training", factory=EvalConfig)
    divergence: DivergenceConfig = setting(help="the critic's value check", factory=DivergenceConfig)
    log: LogConfig = setting(help="metrics sinks", factory=LogConfig)
    preset: tuple[str, ...] = setting((), "the preset layers applied (filled by the loader)")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def guidance_kind(self) -> str:
        return self.guidance.kind

    def policy_config(self) -> PolicyConfig:
        return dataclasses.replace(self.policy, algo=self.algo).resolved()

    def guidance_config(self) -> GuidanceConfig:
        return self.guidance.resolved()

    def validate(self) -> RunConfig:
        build(RunConfig, self.to_json(), "config")  # a tree made directly (Python API) gets a file's type checks
        if not self.dataset:
            raise MDPTError("no dataset: pass --dataset ID or set `dataset:` in --config")
        positive = {"steps": self.steps, "seeds": self.seeds, "batch_size": self.batch_size, "chunk": self.chunk,
                    "eval.episodes": self.eval.episodes}
        for name, value in positive.items():
            if value < 1:
                raise MDPTError(f"{name} must be >= 1, got {value}")
        for name, (limit, why) in INT_LIMITS.items():
            value = self._get(name)
            if isinstance(value, int) and value > limit:
                raise MDPTError(f"{name} {shown(value)} is beyond its limit {limit} ({why})")
            if isinstance(value, int) and value < 0:  # no count is negative (most have a higher floor, below)
                raise MDPTError(f"{name} must be >= 0, got {shown(value)}")
        for name, (limit, why) in FLOAT_LIMITS.items():
            values = self._get(name)
            for value in values if isinstance(values, tuple) else (values,):
                if value is not None and abs(value) > limit:
                    raise MDPTError(f"{name} {value:g} is beyond its limit +-{limit:g} ({why})")
        if self.eval.max_steps is not None and self.eval.max_steps < 1:
            raise MDPTError(f"eval.max_steps must be >= 1, got {self.eval.max_steps}")
        for name in ("final_episodes", "curve_candidates"):
            value = getattr(self.eval, name)
            if value is not None and value < 1:
                raise MDPTError(f"eval.{name} must be >= 1, got {value}")
        for name, value in (("eval.every", self.eval.every), ("checkpoint_every", self.checkpoint_every),
                            ("seed", self.seed)):
            if value < 0:
                raise MDPTError(f"{name} must be >= 0, got {shown(value)}")
        if self.seed + self.seeds > 2**31 - 1:
            raise MDPTError(f"seeds {self.seed}..{self.seed + self.seeds - 1} exceed the 32-bit seed range")
        s1 = self.stage1
        if s1.unfreeze_at is not None and s1.unfreeze_at < 1:
            raise MDPTError(f"stage1.unfreeze_at must be >= 1, got {s1.unfreeze_at}")
        if s1.guidance_steps is not None and s1.guidance_steps < 1:
            raise MDPTError(f"stage1.guidance_steps must be >= 1, got {s1.guidance_steps}")
        if self.mode == "guidance-first" and self.guidance.kind == "dql-critic" and not s1.guidance_path:
            raise MDPTError("guidance-first training needs a trained dql-critic via --guidance DIR, "
                            "or a policy-independent kind (iql, sarsa)")
        if s1.guidance_path and self.mode == "joint" and self.algo is not None:
            raise MDPTError("--guidance DIR is for --mode guidance-first; joint training trains its own guidance")
        if self.divergence.margin <= 0 or self.divergence.patience < 1:
            raise MDPTError("divergence.margin must be > 0 and divergence.patience >= 1")
        self.selector.validate(True)
        self.guidance_config()
        if self.algo is not None:
            pc = self.policy_config()
            if pc.algo == "cfg" and self.guidance.kind == "dql-critic":
                raise MDPTError("cfg policies need a guidance with V(s) for their labels: use iql or sarsa")
            if pc.algo == "awr" and pc.awr_temperature > 0 and self.guidance.kind == "dql-critic":
                raise MDPTError("awr weights actions by Q - V: it needs a guidance with V(s) (iql or sarsa)")
        return self

    def _get(self, dotted: str):
        node = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    def to_json(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> RunConfig:
        return resolve_config(d, where)


def _guidance_kind(user: dict) -> str:
    """The guidance kind a run uses: named, read from a given guidance module, or the preset's (a
    kind that is not one is left for the builder to refuse; the presets use the default)."""
    from mdpt.guidance.module import GUIDANCE_KINDS

    kind = (user.get("guidance") or {}).get("kind")
    if kind in GUIDANCE_KINDS:
        return kind
    path = (user.get("stage1") or {}).get("guidance_path")
    if isinstance(path, str) and path and user.get("mode") == "guidance-first":
        from mdpt.artifacts import read_meta, resolve_artifact_dir

        try:
            saved = read_meta(resolve_artifact_dir(path, "guidance"), "guidance").get("kind")
            if saved in GUIDANCE_KINDS:
                return saved
        except MDPTError:
            pass  # reported with its own message when the run loads it
    algo, mode = user.get("algo"), user.get("mode", "joint")
    if algo not in POLICY_ALGOS + (None,) or mode not in MODES:
        return presets.STANDALONE_KIND  # refused below with the right message
    return presets.guidance_kind_for(algo, mode)


def resolve_config(settings: dict, where: str = "config") -> RunConfig:
    """The resolved RunConfig: presets for (algo, mode, guidance kind, dataset) under `settings`
    (a nested mapping, flat aliases allowed). Every value is checked before anything runs."""
    if not isinstance(settings, dict):
        raise MDPTError(f"{where}: expected a mapping of settings, got {type(settings).__name__}")
    user = unalias(RunConfig, settings, where)
    for section in ("guidance", "stage1", "policy", "selector", "eval", "divergence", "log"):
        if user.get(section) is not None and not isinstance(user[section], dict):
            raise MDPTError(f"{where}.{section}: expected a mapping of settings, got {user[section]!r}")
    kind = _guidance_kind(user)
    algo, mode, dataset = _preset_keys(user)
    layers = presets.preset_layers(algo, mode, kind, dataset)
    merged: dict = {}
    for _, layer in layers:
        merged = presets.merge(merged, layer)
    merged = presets.merge(merged, user)
    if (user.get("guidance") or {}).get("kind") is None:
        set_dotted(merged, "guidance.kind", kind, where)
    if algo is not None:
        set_dotted(merged, "policy.algo", algo, where)
    merged["preset"] = [name for name, _ in layers]
    config = build(RunConfig, merged, where)
    return config.validate()


def _preset_keys(user: dict) -> tuple[str | None, str, str | None]:
    """(algo, mode, dataset) for choosing presets; values that are not valid choose none (the
    builder refuses them with their own message)."""
    algo = user.get("algo") if user.get("algo") in POLICY_ALGOS else None
    mode = user.get("mode") if user.get("mode") in MODES else "joint"
    from mdpt.data.load import preset_dataset

    dataset = preset_dataset(user.get("dataset")) if isinstance(user.get("dataset"), str) else None
    return algo, mode, dataset


def provenance(settings: dict) -> dict[str, str]:
    """Where each resolved setting comes from: 'default', a preset layer's name, or 'given'."""
    user = unalias(RunConfig, settings)
    kind = _guidance_kind(user)
    source = {"guidance.kind": "preset", "policy.algo": "algo"}
    for name, layer in presets.preset_layers(*_preset_keys(user)[:2], kind, _preset_keys(user)[2]):
        for key in flatten(layer):
            source[key] = name
    source.update({k: "given" for k in flatten(user)})
    return source


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise MDPTError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise MDPTError(f"{path}: invalid YAML{at}") from None
    except RecursionError:
        raise MDPTError(f"{path}: nested too deeply for a settings file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MDPTError(f"{path}: cannot read the config file ({e.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MDPTError(f"{path}: expected a mapping of settings at the top level")
    check_size(data, str(path))
    return data


def parse_override(item: str) -> tuple[str, object]:
    """'a.b=VALUE' -> ('a.b', VALUE parsed as YAML)."""
    import yaml

    if "=" not in item:
        raise MDPTError(f"--set {item!r}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError):
        raise MDPTError(f"--set {shown(item)}: value is not valid YAML, or nested too deeply") from None
    check_size(value, f"--set {key.strip()}")
    return key.strip(), value


def apply_overrides(d: dict, items) -> dict:
    """`--set key=value` items applied to a nested mapping (dotted keys; flat aliases allowed)."""
    for item in items or ():
        key, value = parse_override(item)
        set_dotted(d, key, value, f"--set {item!r}")
    return d


def load_config(config_file: str | Path | None = None, sets=(), base: dict | None = None, top: dict | None = None,
                where: str = "config") -> RunConfig:
    """base < YAML file < `--set` items < top, then presets under all of it (`resolve_config`)."""
    d = presets.merge(base or {}, unalias(RunConfig, load_yaml(config_file), str(config_file))) if config_file \
        else dict(base or {})
    d = unalias(RunConfig, d, where)
    for item in sets or ():
        key, value = parse_override(item)
        d = presets.merge(d, unalias(RunConfig, _nested(key, value, item)))
    d = presets.merge(d, unalias(RunConfig, top or {}))
    return resolve_config(d, where)


def _nested(key: str, value, item: str) -> dict:
    out: dict = {}
    set_dotted(out, key, value, f"--set {item!r}")
    return out
