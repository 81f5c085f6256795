"""Published settings, per algorithm, per guidance kind and per task: the one table of defaults.

Every setting of a run whose code default is "from the preset" is filled here, in this order
(later layers win): the guidance kind's preset, the algorithm's preset, the task's preset for
(algorithm, dataset id). The user's YAML file, flags and `--set` items come on top
(`mdpt.experiments.config.resolve_config`). A dataset without a published task preset gets the
algorithm's defaults, with a note.

The presets are the paper authors' bullet settings (their CleanDiffuser-based scripts), which
is what the paper's numbers come from, with two deliberate departures, each a published fix:
- target critics move by Polyak tau = 0.005 every step (Diffusion-QL, IDQL); CleanDiffuser's
  pipelines move the target 0.995 of the way to the online critic every 5th step (a reversed
  Polyak rate, see ../shared/REFERENCE.md "traps");
- DQL clips gradient norms per task as Diffusion-QL does (main.py's table), on top of the
  authors' LayerNorm critic: either alone has been seen to fail on bullet walker2d;
and one warm-up that leaves runs of the paper's length unchanged: IDQL's actor EMA decay is
min(0.9999, (1 + n) / (10 + n)) after n updates (see the "idql" entry).
Sources: docs/ARCHITECTURE.md "Presets" lists file and line for every value.
This module imports nothing from mdpt: the modules read their defaults from it.
"""

from __future__ import annotations

import copy

# ---------------------------------------------------------------- guidance kinds (value estimators)
GUIDANCE = {
    # IQL/IDQL: twin Q + V, 2 x 256 ReLU with LayerNorm, expectile 0.7.
    "iql": {"hidden": 256, "depth": 2, "activation": "relu", "first_activation": "same", "layer_norm": True,
            "expectile": 0.7, "update_every": 1},
    "sarsa": {"hidden": 256, "depth": 2, "activation": "relu", "first_activation": "same", "layer_norm": True,
              "expectile": 0.7, "update_every": 1},
    # The authors' DQL/EDP critic (CleanDiffuser DQLCritic): [Linear, LayerNorm, Tanh] then
    # 2 x [Linear, LayerNorm, Mish]. Diffusion-QL's own critic is the same without LayerNorm and
    # with Mish throughout; it diverges on bullet walker2d in joint training even with clipping.
    "dql-critic": {"hidden": 256, "depth": 3, "activation": "mish", "first_activation": "tanh", "layer_norm": True,
                   "expectile": 0.7, "update_every": 1},
}
GUIDANCE_COMMON = {"discount": 0.99, "tau": 0.005, "lr": 3e-4, "lr_schedule": "constant", "lr_decay_steps": None,
                   "grad_clip": None, "weight_decay": 0.0, "max_q_backup": False, "backup_samples": 10}

# Selection with a guidance module at inference: the rule and beta belong to the value estimator
# (its scale), the candidate count and temperature to the policy's sampler (ALGORITHMS below).
SELECTION = {
    "iql": {"selector": "softmax", "beta": 0.5},
    "sarsa": {"selector": "softmax", "beta": 0.5},
    "dql-critic": {"selector": "softmax", "beta": 1.0},  # per task below (the authors' bullet table)
}

# ---------------------------------------------------------------- diffusion policies
# Diffusion of DQL, IDQL and CFG: eps-prediction on the VP schedule, clipped x0 at every step; the
# temperature scales the initial noise only, as in the authors' CleanDiffuser sampler
# (diffusionsde.py:493; original IDQL scales every step's noise, Diffusion-QL has no temperature).
DIFFUSION_DQL = {"prediction": "eps", "noise_schedule": "vp", "temperature_mode": "initial-noise",
                 "clip_denoised": True, "clip_one_step": True}
ALGORITHMS = {
    # Diffusion-QL: DQL MLP, T = 5 VP, eta 1, EMA 0.995 every 5 steps after 1000, critic trained
    # jointly; the authors: actor AdamW (weight decay 0.01), actor and critic lr cosine over 200k.
    "dql": {
        "policy": {"net": "mlp", "T": 5, "eta": 1.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "dql-critic", "lr_schedule": "cosine", "lr_decay_steps": 200_000},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
    # IDQL: LN-ResNet, T = 5, pure BC, actor EMA every step; the authors: actor AdamW (0.01), lr
    # cosine over 200k, EMA 0.9999, IQL critic updated every second step (CleanDiffuser's pipeline).
    # EMA 0.9999 from step 0 leaves 22% of the initial weights in the sampling copy at 15k steps
    # (IDQL's own code: decay 0.999): the decay is warmed up, (1 + n) / (10 + n) after n updates,
    # and reaches 0.9999 at 90k updates, so runs at the paper's length are unchanged.
    "idql": {
        "policy": {"net": "lnresnet", "T": 5, "eta": 0.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.9999, "ema_every": 1, "ema_start": 0, "ema_warmup": True, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "iql", "update_every": 2},
        "selector": {"candidates": 256, "temperature": 0.5},
    },
    # EDP as the authors run it (CleanDiffuser pipelines/edp_d4rl_mujoco.py): x0-prediction (:48),
    # an unclipped one-step x0 for the Q term (:100-108), sampling clipped to the box, the cosine
    # schedule (diffusionsde.py:338), T = 50, DPM-Solver++(2M) with 15 steps; DQL's critic.
    "edp": {
        "policy": {"net": "mlp", "T": 50, "eta": 1.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False,
                   "weight_decay": 0.01, "prediction": "x0", "noise_schedule": "cosine", "sampler": "dpm-solver++",
                   "sample_steps": 15,
                   "temperature_mode": "initial-noise", "clip_denoised": True, "clip_one_step": False},
        "guidance": {"kind": "dql-critic", "lr_schedule": "cosine", "lr_decay_steps": 200_000},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
    # Classifier-free reward guidance (CFGRL-style labels from an IQL critic).
    "cfg": {
        "policy": {"net": "mlp", "T": 5, "eta": 0.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "iql"},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
}
# Guidance-first training trains a policy-independent guidance first unless told otherwise.
GUIDANCE_FIRST_KIND = "iql"
STANDALONE_KIND = "iql"

# ---------------------------------------------------------------- tasks
# Diffusion-QL's gradient-norm clipping per task (main.py L17-38), on actor and critic of DQL (EDP's
# code clips nothing). Expert data is not in its table: the medium-expert value stands in (noted).
DQL_GRAD_NORM = {
    ("halfcheetah", "medium"): 9.0, ("hopper", "medium"): 9.0, ("walker2d", "medium"): 1.0,
    ("halfcheetah", "medium-replay"): 2.0, ("hopper", "medium-replay"): 4.0, ("walker2d", "medium-replay"): 4.0,
    ("halfcheetah", "medium-expert"): 7.0, ("hopper", "medium-expert"): 5.0, ("walker2d", "medium-expert"): 5.0,
}
# The authors' beta of softmax(beta * min Q) for DQL and EDP on bullet tasks (their task files).
DQL_BETA = {
    ("halfcheetah", "medium"): 50.0, ("halfcheetah", "medium-replay"): 50.0,
    ("halfcheetah", "medium-expert"): 50.0, ("halfcheetah", "expert"): 50.0,
    ("hopper", "medium"): 100.0, ("hopper", "medium-replay"): 100.0,
    ("hopper", "medium-expert"): 8.0, ("hopper", "expert"): 50.0,
    ("walker2d", "medium"): 300.0, ("walker2d", "medium-replay"): 300.0,
    ("walker2d", "medium-expert"): 300.0, ("walker2d", "expert"): 50.0,
}
BULLET_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
BULLET_QUALITIES = ("random", "medium", "medium-replay", "medium-expert", "expert")


def split_dataset_id(dataset: str | None) -> tuple[str, str] | None:
    """('hopper', 'medium-replay') for 'bullet-hopper-medium-replay-v0'; None for other names."""
    if not dataset or not dataset.startswith("bullet-") or not dataset.endswith("-v0"):
        return None
    env, _, quality = dataset[len("bullet-"):-len("-v0")].partition("-")
    return (env, quality) if env in BULLET_ENVS and quality in BULLET_QUALITIES else None


def task_settings(algo: str | None, kind: str, dataset: str | None) -> dict:
    """Per-task settings (nested {'policy': ..., 'guidance': ..., 'selector': ...}) for a run."""
    task = split_dataset_id(dataset)
    out: dict = {}
    if task is None:
        return out
    if kind == "dql-critic" and task in DQL_BETA:
        out.setdefault("selector", {})["beta"] = DQL_BETA[task]
    if algo == "dql":
        clip = DQL_GRAD_NORM.get(task) or DQL_GRAD_NORM.get((task[0], "medium-expert"))
        if clip is not None:
            out.setdefault("policy", {})["grad_clip"] = clip
            if kind == "dql-critic":
                out.setdefault("guidance", {})["grad_clip"] = clip
    return out


def task_note(algo: str | None, kind: str, dataset: str | None) -> str | None:
    """A sentence when the dataset has no published preset (the algorithm's defaults apply)."""
    task = split_dataset_id(dataset)
    if task is None:
        return (f"no published preset for dataset {dataset!r}: the {algo or kind} defaults apply "
                "(selection beta and gradient clipping not tuned for it)")
    if algo == "dql" and task not in DQL_GRAD_NORM and (task[0], "medium-expert") in DQL_GRAD_NORM:
        return f"Diffusion-QL publishes no gradient clip for {task[1]} data: the {task[0]} medium-expert value is used"
    if kind == "dql-critic" and task not in DQL_BETA:
        return f"no published selection beta for {dataset}: the dql-critic default applies"
    return None


def guidance_kind_for(algo: str | None, mode: str) -> str:
    """The guidance a run trains (joint) or trains first (guidance-first) when none is named."""
    if algo is None:
        return STANDALONE_KIND
    if mode == "guidance-first":
        return GUIDANCE_FIRST_KIND
    return ALGORITHMS[algo]["guidance"]["kind"]


def preset_layers(algo: str | None, mode: str, kind: str, dataset: str | None) -> list[tuple[str, dict]]:
    """The named preset layers for a run, lowest first: [(name, nested settings), ...]."""
    layers = [(f"guidance:{kind}", {"guidance": {**GUIDANCE_COMMON, **GUIDANCE[kind]},
                                    "selector": {**SELECTION[kind], "candidates": 50, "temperature": 0.5}})]
    if algo is not None:
        a = copy.deepcopy(ALGORITHMS[algo])
        guidance = {k: v for k, v in a["guidance"].items() if k != "kind"}
        if mode == "guidance-first" or a["guidance"]["kind"] != kind:
            guidance = {}  # the algorithm's training schedule for its own critic does not apply
        layers.append((f"algo:{algo}", {"policy": a["policy"], "guidance": guidance, "selector": a["selector"]}))
    task = task_settings(algo, kind, dataset)
    if task:
        layers.append((f"task:{dataset}", task))
    return layers


def merge(base: dict, top: dict) -> dict:
    """Nested merge: mappings merge key by key, anything else in `top` replaces `base`."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolved_preset(algo: str | None, mode: str, kind: str, dataset: str | None) -> dict:
    out: dict = {}
    for _, layer in preset_layers(algo, mode, kind, dataset):
        out = merge(out, layer)
    return out
