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
  Polyak rate: [AUTH] pipelines/Neu_dql_d4rl_mujoco.py:123);
- DQL clips gradient norms per task as Diffusion-QL does (main.py's table), on top of the
  authors' LayerNorm critic: either alone has been seen to fail on bullet walker2d;
and one warm-up that leaves runs of the paper's length unchanged: IDQL's actor EMA decay is
min(0.9999, (1 + n) / (10 + n)) after n updates (see the "idql" entry).
Five more settings follow the reference implementations (Diffusion-QL, IDQL) rather than the
authors' scripts; each is measured against the authors' value on bullet hopper-medium-replay, same
seeds and budget, by results/preset-departures (run.sh, analyse.py):
- noise schedule: VP, T = 5 ([DQL] main.py:198 beta_schedule 'vp', agents/helpers.py:57-64; [IDQL]
  ddpm_iql_learner.py:78); the authors' DQL and IDQL pass none ([AUTH] pipelines/Neu_dql_d4rl_mujoco.py:47-51,
  Neu_idql_d4rl_mujoco.py:50-54) and get CleanDiffuser's default, a continuous cosine schedule ([CD]
  diffusion/diffusionsde.py:338, utils/utils.py:122-126);
- DQL's time embedding: 16 wide ([DQL] agents/model.py:20 t_dim=16); the authors build DQLMlp with
  emb_dim=64 ([AUTH] Neu_dql_d4rl_mujoco.py:39; [CD] nn_diffusion/dqlmlp.py:14 defaults to 16);
- the IQL critic: ReLU with LayerNorm ([IDQL] jaxrl5/networks/mlp.py:26 ReLU, its Q without LayerNorm,
  mlp.py:28); the authors' is LayerNorm + Mish after each hidden layer ([AUTH] Neu_idql_d4rl_mujoco.py:57
  IDQLQNet = [CD] utils/building_blocks.py:9 TwinQ, utils/iql.py:11-12);
- the IQL critic's learning rate: constant ([IDQL] ddpm_iql_learner.py:130 optax.adam(critic_lr)); the
  authors' is cosine with T_max = 200k ([AUTH] Neu_idql_d4rl_mujoco.py:68), stepped only on the critic's
  every-second-step updates (:86, :104), so it ends at half the rate, 1.5e-4;
- the stage-1 guidance of guidance-first trains as long as the policy (`stage1.guidance_steps`, None:
  `steps`); the authors' DQL stage 1 trains 1M steps ([AUTH] Neu_dql_d4rl_mujoco_GFDT.py:29) with its
  target frozen at initialization (:133-137 commented out: `--stage1 authors`).
D4RL MuJoCo tasks (v2 ids `hopper-medium-v2`, Minari ids `mujoco/hopper/medium-v0`) take
Diffusion-QL's own per-task table for DQL and IDQL's locomotion settings; the authors publish no
MuJoCo task files (their `configs/*/mujoco/task/` hold the bullet tasks only).

Sources, cited next to every value as `[KEY] file:line` at these commits:
- [AUTH] juliachen2357-maker/modular-diffusion-policy @ fe3d331 (the paper's code);
- [CD] CleanDiffuserTeam/CleanDiffuser @ 05f17fc (the library the authors' pipelines call);
- [DQL] Zhendong-Wang/Diffusion-Policies-for-Offline-RL @ d871f5c (Diffusion-QL);
- [IDQL] philippe-eecs/IDQL @ 7582571;
- [IQL] ikostrikov/implicit_q_learning @ 09d7002 (IQL, the baselines' policy extraction);
- [MDPT] a choice of this project, with its reason next to it.
This module imports nothing from mdpt: the modules read their defaults from it.
"""

from __future__ import annotations

import copy
import re

# ---------------------------------------------------------------- guidance kinds (value estimators)
GUIDANCE = {
    # IQL/IDQL: twin Q + V, 2 x 256 ([IDQL] ddpm_iql_learner.py:86 critic_hidden_dims (256, 256)), ReLU
    # ([IDQL] jaxrl5/networks/mlp.py:26), LayerNorm ([CD] utils/iql.py:11, the authors' IDQL critic),
    # expectile 0.7 ([AUTH] configs/idql/mujoco/mujoco.yaml:21 iql_tau), updated every step ([IDQL]:
    # the critic and value update on each call, ddpm_iql_learner.py:174).
    "iql": {"hidden": 256, "depth": 2, "activation": "relu", "first_activation": "same", "layer_norm": True,
            "expectile": 0.7, "update_every": 1},
    # SARSA: the IQL critic's network trained on the dataset's next actions ([MDPT]: a behaviour-value
    # guidance that is independent of any policy, same network so that the two compare).
    "sarsa": {"hidden": 256, "depth": 2, "activation": "relu", "first_activation": "same", "layer_norm": True,
              "expectile": 0.7, "update_every": 1},
    # The authors' DQL/EDP critic ([CD] utils/building_blocks.py:125-129 DQLCritic): [Linear 256
    # ([AUTH] configs/dql/mujoco/mujoco.yaml:15 hidden_dim), LayerNorm, Tanh] then 2 x [Linear, LayerNorm,
    # Mish]. Diffusion-QL's own critic is the same without LayerNorm and with Mish throughout; it
    # diverges on bullet walker2d in joint training even with clipping. (`expectile` is read by the
    # iql kind only; SARSA and this critic carry it unused.)
    "dql-critic": {"hidden": 256, "depth": 3, "activation": "mish", "first_activation": "tanh", "layer_norm": True,
                   "expectile": 0.7, "update_every": 1},
}
# discount 0.99 ([AUTH] configs/dql/mujoco/mujoco.yaml:10); Polyak tau 0.005 every step ([DQL] main.py:194,
# [IDQL] ddpm_iql_learner.py:89); critic lr 3e-4 ([AUTH] configs/dql/mujoco/mujoco.yaml:4), constant unless an
# algorithm says otherwise ([IDQL] ddpm_iql_learner.py:174: Adam without schedule); no clip, no weight decay
# (torch.optim.Adam defaults, [AUTH] pipelines/Neu_idql_d4rl_mujoco.py:61); max-Q backup off with 10 samples
# when on ([DQL] main.py:18-26 max_q_backup False for locomotion; agents/ql_diffusion.py:118 repeats=10).
GUIDANCE_COMMON = {"discount": 0.99, "tau": 0.005, "lr": 3e-4, "lr_schedule": "constant", "lr_decay_steps": None,
                   "grad_clip": None, "weight_decay": 0.0, "max_q_backup": False, "backup_samples": 10}

# Selection with a guidance module at inference: the rule and beta belong to the value estimator
# (its scale), the candidate count and temperature to the policy's sampler (ALGORITHMS below).
SELECTION = {
    # softmax(0.5 * (Q - V)): [AUTH] configs/idql/mujoco/mujoco.yaml:37 weight_temperature.
    "iql": {"selector": "softmax", "beta": 0.5},
    "sarsa": {"selector": "softmax", "beta": 0.5},  # [MDPT] the IQL network, so IQL's rule
    # softmax(beta * min Q), beta per task below; 1.0 is Diffusion-QL's softmax over raw Q
    # ([DQL] agents/ql_diffusion.py:193).
    "dql-critic": {"selector": "softmax", "beta": 1.0},
}

# ---------------------------------------------------------------- diffusion policies
# Diffusion of DQL, IDQL and CFG: eps-prediction ([AUTH] configs/dql/mujoco/mujoco.yaml:26 predict_noise) on
# the VP schedule ([DQL] main.py:198 beta_schedule 'vp'), clipped x0 at every step ([AUTH]
# pipelines/Neu_dql_d4rl_mujoco.py:49 x_max/x_min); the temperature scales the initial noise only, as in
# the authors' CleanDiffuser sampler ([CD] diffusion/diffusionsde.py:493; original IDQL scales every
# step's noise, Diffusion-QL has no temperature).
DIFFUSION_DQL = {"prediction": "eps", "noise_schedule": "vp", "temperature_mode": "initial-noise",
                 "clip_denoised": True, "clip_one_step": True}
ALGORITHMS = {
    # Diffusion-QL: DQL MLP, T = 5 ([AUTH] configs/dql/mujoco/mujoco.yaml:9), eta 1 ([AUTH]
    # configs/dql/mujoco/task/bullet-*.yaml:4), lr 3e-4 (mujoco.yaml:1), cosine over 200k (mujoco.yaml:14
    # gradient_steps; pipelines/Neu_dql_d4rl_mujoco.py:61-62, actor and critic), EMA 0.995 (mujoco.yaml:11)
    # every 5 steps (:12) after 1000 (Neu_dql_d4rl_mujoco.py:120), DDPM (mujoco.yaml:31) with 5 steps (:28);
    # actor AdamW ([CD] diffusion/basic.py:66; weight decay 0.01 is torch's AdamW default, the pipeline
    # passes only lr); 50 candidates (mujoco.yaml:22) at temperature 0.5 (:32); critic trained jointly.
    "dql": {
        "policy": {"net": "mlp", "depth": 3, "T": 5, "eta": 1.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "dql-critic", "lr_schedule": "cosine", "lr_decay_steps": 200_000},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
    # IDQL: LN-ResNet ([CD] nn_diffusion/idqlmlp.py:21; 3 blocks, dropout 0.1: [AUTH]
    # configs/idql/mujoco/mujoco.yaml:4,1), T = 5 (:13), pure BC, lr 3e-4 (:3) cosine over 200k (:17;
    # pipelines/Neu_idql_d4rl_mujoco.py:67), actor AdamW 0.01 (as DQL), EMA 0.9999 (:15) every step, IQL
    # critic updated every second step (Neu_idql_d4rl_mujoco.py:86), 256 candidates (:25) at temperature
    # 0.5 (:35). EMA 0.9999 from step 0 leaves 22% of the initial weights in the sampling copy at 15k
    # steps (IDQL's own code: actor_tau 0.001, [IDQL] ddpm_iql_learner.py:95): [MDPT] the decay is warmed
    # up, (1 + n) / (10 + n) after n updates, and reaches 0.9999 at 90k updates, so runs at the paper's
    # length are unchanged.
    "idql": {
        "policy": {"net": "lnresnet", "depth": 3, "T": 5, "eta": 0.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.9999, "ema_every": 1, "ema_start": 0, "ema_warmup": True, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "iql", "update_every": 2},
        "selector": {"candidates": 256, "temperature": 0.5},
    },
    # EDP as the authors run it ([CD] pipelines/edp_d4rl_mujoco.py): x0-prediction (:48), an unclipped
    # one-step x0 for the Q term (:100-108), sampling clipped to the box, the cosine schedule ([CD]
    # diffusion/diffusionsde.py:338), T = 50 ([AUTH] configs/edp/mujoco/mujoco.yaml:9), DPM-Solver++(2M)
    # (:30) with 15 steps (:27); lr 3e-4 (:1) cosine over 200k (:14), EMA 0.995 (:11) every 5 (:12) after
    # 1000 (as DQL), 50 candidates (:22) at temperature 0.5 (:31); DQL's critic.
    "edp": {
        "policy": {"net": "mlp", "depth": 3, "T": 50, "eta": 1.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False,
                   "weight_decay": 0.01, "prediction": "x0", "noise_schedule": "cosine", "sampler": "dpm-solver++",
                   "sample_steps": 15,
                   "temperature_mode": "initial-noise", "clip_denoised": True, "clip_one_step": False},
        "guidance": {"kind": "dql-critic", "lr_schedule": "cosine", "lr_decay_steps": 200_000},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
    # Classifier-free reward guidance (CFGRL-style labels from an IQL critic). [MDPT]: no published
    # implementation (the paper's code runs its condition at dropout 0, w = 1); DQL's network and
    # schedule above so that CFG differs from DQL only in how the guidance enters.
    "cfg": {
        "policy": {"net": "mlp", "depth": 3, "T": 5, "eta": 0.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": 200_000,
                   "ema_decay": 0.995, "ema_every": 5, "ema_start": 1000, "ema_warmup": False, "sampler": "ddpm",
                   "sample_steps": 5, "weight_decay": 0.01, **DIFFUSION_DQL},
        "guidance": {"kind": "iql"},
        "selector": {"candidates": 50, "temperature": 0.5},
    },
}
# The baselines beside every diffusion score ([IQL] ikostrikov/implicit_q_learning @ 09d7002): a Gaussian
# policy, MLP 2 x 256 ReLU with a tanh mean and a state-independent log std (learner.py:70-76), Adam 3e-4
# (learner.py:53) cosine-decayed over the run (learner.py:79, over its 1M steps), evaluated at its mean
# action (one candidate); `awr` weights the log-likelihood by min(exp(3 (Q - V)), 100) from a frozen IQL
# guidance (actor.py:18-19; temperature 3.0 on locomotion: configs/mujoco_config.py:15), `bc` by 1. Trained
# jointly with its IQL critic, `awr` is IQL itself. The diffusion fields are DQL's and unused.
_GAUSSIAN = {"net": "mlp", "depth": 2, "T": 5, "eta": 0.0, "lr": 3e-4, "lr_schedule": "cosine", "lr_decay_steps": None,
             "ema_decay": 0.995, "ema_every": 1, "ema_start": 0, "ema_warmup": False, "sampler": "ddpm",
             "sample_steps": 5, "weight_decay": 0.0, "awr_weight_max": 100.0, **DIFFUSION_DQL}
ALGORITHMS["awr"] = {"policy": {**_GAUSSIAN, "awr_temperature": 3.0}, "guidance": {"kind": "iql"},
                     "selector": {"candidates": 1, "temperature": 1.0}}
ALGORITHMS["bc"] = {"policy": {**_GAUSSIAN, "awr_temperature": 0.0}, "guidance": {"kind": "iql"},
                    "selector": {"candidates": 1, "temperature": 1.0}}
BASELINES = ("bc", "awr")
# Guidance-first training trains a policy-independent guidance first unless told otherwise ([MDPT]: the
# authors' DQL pretraining fits its critic to an untrained actor's next actions; IQL depends on no policy).
GUIDANCE_FIRST_KIND = "iql"
STANDALONE_KIND = "iql"

# ---------------------------------------------------------------- tasks
# Diffusion-QL's per-task table ([DQL] main.py:18-26 `hyperparameters`, made for the D4RL MuJoCo v2 tasks):
# lr, eta, max_q_backup, reward_tune, eval_freq (epochs), num_epochs (of 1000 steps, main.py:184) and gn
# (the gradient-norm clip of actor and critic). On MuJoCo tasks DQL takes lr, eta, max_q_backup and gn from
# it; reward_tune 'no' is what MDPT's reward scale (1000 / return range) replaces, and the schedule
# (2000 epochs = 2M steps, evaluated every 50k) is the user's --steps / eval.every (said in the task note).
# Every locomotion row has the same lr, eta, max_q_backup, reward_tune, eval_freq and num_epochs; gn differs.
DIFFUSION_QL_LOCOMOTION = {"lr": 3e-4, "eta": 1.0, "max_q_backup": False, "reward_tune": "no", "eval_freq": 50,
                           "num_epochs": 2000}
DIFFUSION_QL = {task: {**DIFFUSION_QL_LOCOMOTION, "gn": gn} for task, gn in {
    ("halfcheetah", "medium"): 9.0,  # main.py:18
    ("hopper", "medium"): 9.0,  # main.py:19
    ("walker2d", "medium"): 1.0,  # main.py:20
    ("halfcheetah", "medium-replay"): 2.0,  # main.py:21
    ("hopper", "medium-replay"): 4.0,  # main.py:22
    ("walker2d", "medium-replay"): 4.0,  # main.py:23
    ("halfcheetah", "medium-expert"): 7.0,  # main.py:24
    ("hopper", "medium-expert"): 5.0,  # main.py:25
    ("walker2d", "medium-expert"): 5.0,  # main.py:26
}.items()}
# Diffusion-QL's gradient-norm clipping per task (the table's gn), on actor and critic of DQL, on bullet
# tasks too (EDP's code clips nothing). Expert data is not in its table: the medium-expert value stands in
# (noted).
DQL_GRAD_NORM = {task: row["gn"] for task, row in DIFFUSION_QL.items()}
# The authors' beta of softmax(beta * min Q) for DQL and EDP on bullet tasks: `weight_temperature` at line 3
# of [AUTH] configs/dql/mujoco/task/bullet-{env}-{quality}-v0.yaml (configs/edp/... line 3: the same values).
DQL_BETA = {
    ("halfcheetah", "medium"): 50.0, ("halfcheetah", "medium-replay"): 50.0,
    ("halfcheetah", "medium-expert"): 50.0, ("halfcheetah", "expert"): 50.0,
    ("hopper", "medium"): 100.0, ("hopper", "medium-replay"): 100.0,
    ("hopper", "medium-expert"): 8.0, ("hopper", "expert"): 50.0,
    ("walker2d", "medium"): 300.0, ("walker2d", "medium-replay"): 300.0,
    ("walker2d", "medium-expert"): 300.0, ("walker2d", "expert"): 50.0,
}
# IDQL on locomotion: expectile 0.7 for every task but antmaze ([IDQL] launcher/examples/
# train_ddpm_iql_offline.py:79-82, critic_hyperparam); its other settings are the algorithm's above.
IDQL_LOCOMOTION_EXPECTILE = 0.7
TASK_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")  # D4RL's locomotion envs, bullet and MuJoCo
TASK_QUALITIES = ("random", "medium", "medium-replay", "medium-expert", "expert")
# Minari's D4RL MuJoCo successors (mujoco/{env}/{simple,medium,expert}-v0): medium is D4RL's recipe (a
# policy at about a third of the expert's return), so it takes D4RL medium's row; expert takes the
# medium-expert row like bullet expert data (noted); simple (a barely trained policy) has none.
MINARI_ID = re.compile(r"^mujoco/(?P<env>[a-z0-9]+)/(?P<quality>[a-z-]+)-v\d+$")


def task_key(dataset: str | None) -> tuple[str, str, str] | None:
    """(family, env, quality): ('bullet', 'hopper', 'medium-replay') for bullet-hopper-medium-replay-v0,
    ('mujoco', 'hopper', 'medium') for hopper-medium-v2, ('minari', 'hopper', 'medium') for
    mujoco/hopper/medium-v0; None for other names."""
    if not dataset:
        return None
    if dataset.startswith("bullet-") and dataset.endswith("-v0"):
        env, _, quality = dataset[len("bullet-"):-len("-v0")].partition("-")
        return ("bullet", env, quality) if env in TASK_ENVS and quality in TASK_QUALITIES else None
    if dataset.endswith("-v2"):
        env, _, quality = dataset[:-len("-v2")].partition("-")
        return ("mujoco", env, quality) if env in TASK_ENVS and quality in TASK_QUALITIES else None
    m = MINARI_ID.match(dataset)
    if m and m.group("env") in TASK_ENVS:
        return "minari", m.group("env"), m.group("quality")
    return None


def _dql_row(env: str, quality: str) -> dict | None:
    return DIFFUSION_QL.get((env, quality)) or DIFFUSION_QL.get((env, "medium-expert" if quality == "expert" else ""))


def task_settings(algo: str | None, kind: str, dataset: str | None) -> dict:
    """Per-task settings (nested {'policy': ..., 'guidance': ..., 'selector': ..., 'eval': ...}) for a run."""
    key = task_key(dataset)
    out: dict = {}
    if key is None:
        return out
    family, env, quality = key
    task = (env, quality)
    if family == "minari":
        out["eval"] = {"reference": "dataset"}  # Minari datasets carry their own ref_min/max_score
    if family == "bullet":
        if kind == "dql-critic" and task in DQL_BETA:
            out.setdefault("selector", {})["beta"] = DQL_BETA[task]
        if algo == "dql":
            clip = DQL_GRAD_NORM.get(task) or DQL_GRAD_NORM.get((env, "medium-expert"))
            if clip is not None:
                out.setdefault("policy", {})["grad_clip"] = clip
                if kind == "dql-critic":
                    out.setdefault("guidance", {})["grad_clip"] = clip
        return out
    if kind in ("iql", "sarsa"):
        out.setdefault("guidance", {})["expectile"] = IDQL_LOCOMOTION_EXPECTILE
    row = _dql_row(env, quality)
    if algo == "dql" and row is not None:
        out.setdefault("policy", {}).update({"lr": row["lr"], "eta": row["eta"], "grad_clip": row["gn"]})
        if kind == "dql-critic":
            out.setdefault("guidance", {}).update({"lr": row["lr"], "grad_clip": row["gn"],
                                                   "max_q_backup": row["max_q_backup"]})
    return out


def task_reference(dataset: str | None) -> str:
    """The score reference of a dataset's runs by preset: Minari ids the dataset's own, others D4RL's."""
    return task_settings(None, "iql", dataset).get("eval", {}).get("reference", "d4rl")


def task_note(algo: str | None, kind: str, dataset: str | None) -> str | None:
    """A sentence when the dataset has no published preset (the algorithm's defaults apply)."""
    key = task_key(dataset)
    if key is None:
        return (f"no published preset for dataset {dataset!r}: the {algo or kind} defaults apply "
                "(selection beta and gradient clipping not tuned for it)")
    family, env, quality = key
    task = (env, quality)
    if family == "bullet":
        if algo == "dql" and task not in DQL_GRAD_NORM and (env, "medium-expert") in DQL_GRAD_NORM:
            return (f"Diffusion-QL publishes no gradient clip for {quality} data: the {env} medium-expert value "
                    f"is used")
        if kind == "dql-critic" and task not in DQL_BETA:
            return f"no published selection beta for {dataset}: the dql-critic default applies"
        return None
    if algo == "dql":
        if _dql_row(env, quality) is None:
            return (f"Diffusion-QL publishes no settings for {env} {quality} data: the dql defaults apply "
                    f"(gradient clipping not tuned for it)")
        if task not in DIFFUSION_QL:
            return (f"Diffusion-QL publishes no settings for {quality} data: the {env} medium-expert row is used")
        return ("Diffusion-QL trains 2000 epochs of 1000 steps (2M steps), evaluating every 50 epochs; set "
                "--steps and eval.every for its schedule")
    if kind == "dql-critic":
        return "the authors publish no MuJoCo selection beta: Diffusion-QL's softmax over Q (beta 1) applies"
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
    # a guidance alone (no policy's sampler yet) draws like DQL: 50 candidates at temperature 0.5 ([AUTH]
    # configs/dql/mujoco/mujoco.yaml:22,32); an algorithm's layer replaces them
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
