"""Make a D4RL-style bullet dataset locally, by the D4RL recipe (`mdpt data make ID`).

Recipe (see shared/datasets/README.md): train SAC online on the PyBullet env, checkpoint and
evaluate it every `eval_every` steps (deterministic episodes); `expert` = the best checkpoint,
`medium` = the first checkpoint whose evaluation return reaches a third of the expert's,
`medium-replay` = the replay buffer up to the medium checkpoint, `random` = a randomly initialised
policy, `medium-expert` = medium + expert (both files are written; the loader concatenates them).
Datasets are rollouts of the stochastic policy. Reference returns: `ref_min_score` = mean return
of uniform random actions over 10 episodes, `ref_max_score` = mean episode return of the expert data.

Everything is seeded: the same arguments give the same file. Work is kept under
`<out>/.mdpt-make/<env>-seed<S>-<hash>/` (SAC state, replay buffer and checkpoints as safetensors,
progress as JSON); an interrupted make resumes from its last checkpoint. To make resuming exact,
every checkpoint also cuts the training episode (marked as a timeout) and starts a fresh env.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mdpt.data import envs
from mdpt.data.registry import EnvSpec, parse_dataset_id
from mdpt.errors import MDPTError
from mdpt.io import read_json, versions, write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 1
QUALITY_FILES = {  # requested quality -> qualities written
    "random": ("random",),
    "medium": ("medium",),
    "expert": ("expert",),
    "medium-replay": ("medium-replay",),
    "medium-expert": ("medium", "expert"),
}


@dataclass(frozen=True)
class MakeConfig:
    env: str  # short env name (hopper, ...)
    sac_steps: int = 150_000
    transitions: int = 100_000
    seed: int = 0
    eval_every: int = 10_000
    eval_episodes: int = 5
    ref_episodes: int = 10
    learning_starts: int = 5000
    train_freq: int = 1

    def training_key(self) -> dict:
        """What determines the SAC run (rollout sizes do not)."""
        d = asdict(self)
        d.pop("transitions")
        d.pop("ref_episodes")
        return d


@dataclass
class MakeResult:
    written: list[Path] = field(default_factory=list)
    work_dir: Path | None = None
    completed: bool = True
    resumed_from: int = 0  # SAC step the run resumed from (0: fresh)
    log: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# environment helpers


def make_env(spec: EnvSpec):
    """A fresh Gymnasium env for `spec` (PyBullet, 1000-step time limit), quiet."""
    return envs.make_env(spec.env_id)


def _seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _episode_returns(spec: EnvSpec, seeds: list[int], act) -> list[float]:
    """Undiscounted return of one episode per reset seed, actions from `act(obs)`."""
    env = make_env(spec)
    out = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(act(obs))
                total += float(r)
                done = term or trunc
            out.append(total)
    finally:
        env.close()
    return out


def random_action_returns(spec: EnvSpec, episodes: int, seed: int) -> list[float]:
    """Returns of uniform random actions, each episode in a freshly reset env."""
    rng = np.random.default_rng(_seed(seed, 7))
    return _episode_returns(spec, [_seed(seed, 7, ep) for ep in range(episodes)],
                            lambda obs: rng.uniform(-1, 1, spec.act_dim).astype(np.float32))


def evaluate(sac, actor_params, spec: EnvSpec, episodes: int, seed: int) -> list[float]:
    """Returns of the deterministic policy (tanh of the mean action)."""
    return _episode_returns(
        spec, [_seed(seed, ep) for ep in range(episodes)],
        lambda obs: np.asarray(sac.deterministic_action(actor_params, obs[None].astype(np.float32))[0]))


def rollout(sac, actor_params, spec: EnvSpec, transitions: int, seed: int, desc: str = "rollout",
            progress: bool = True) -> dict[str, np.ndarray]:
    """`transitions` steps of the stochastic policy in D4RL arrays; a cut final episode is a timeout."""
    import jax
    from tqdm.auto import tqdm

    buf = {
        "observations": np.zeros((transitions, spec.obs_dim), np.float32),
        "actions": np.zeros((transitions, spec.act_dim), np.float32),
        "rewards": np.zeros(transitions, np.float32),
        "terminals": np.zeros(transitions, bool),
        "timeouts": np.zeros(transitions, bool),
        "next_observations": np.zeros((transitions, spec.obs_dim), np.float32),
    }
    key = jax.random.PRNGKey(_seed(seed, 1))
    env = make_env(spec)
    episode = 0
    try:
        obs, _ = env.reset(seed=_seed(seed, 2, episode))
        for i in tqdm(range(transitions), desc=desc, disable=None if progress else True, leave=False):
            act = np.asarray(sac.sample_action(actor_params, obs[None].astype(np.float32), key, i)[0])
            nxt, r, term, trunc, _ = env.step(act)
            buf["observations"][i] = obs
            buf["actions"][i] = act
            buf["rewards"][i] = r
            buf["terminals"][i] = term
            buf["timeouts"][i] = trunc and not term
            buf["next_observations"][i] = nxt
            if term or trunc:
                episode += 1
                obs, _ = env.reset(seed=_seed(seed, 2, episode))
            else:
                obs = nxt
    finally:
        env.close()
    if not buf["terminals"][-1]:
        buf["timeouts"][-1] = True
    return buf


# --------------------------------------------------------------------------------------------
# SAC training with checkpoints


class _Run:
    """The work directory of one SAC run: JSON progress + safetensors state, buffer, checkpoints."""

    def __init__(self, work_dir: Path):
        self.dir = work_dir
        self.progress_path = work_dir / "run.json"

    def load_progress(self) -> dict | None:
        if not self.progress_path.exists():
            return None
        try:
            return read_json(self.progress_path, "make progress file")
        except MDPTError:
            return None  # a damaged progress file: start over

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        from safetensors.numpy import save

        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        write_bytes_atomic(self.dir / name, data)
        return hashlib.sha256(data).hexdigest()

    def load_arrays(self, name: str, sha256: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load

        data = (self.dir / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{name}: checksum mismatch")
        return load(data)


def train_sac(cfg: MakeConfig, work_dir: Path, progress: bool = True,
              stop_after: int | None = None) -> tuple[dict, int, bool]:
    """Train (or resume) SAC; return (progress dict, step resumed from, finished?).

    Checkpoints at every multiple of `eval_every` and at the last step: evaluation returns, the
    actor's parameters, then the full state and buffer, then `run.json` (the commit point).
    `stop_after`: return once a checkpoint at or past this step is saved (used to test resuming).
    """
    import jax
    from tqdm.auto import tqdm

    from mdpt.data.registry import ENVS
    from mdpt.data.sac import ReplayBuffer, SACConfig, get_sac, state_from_flat, state_to_flat

    spec = ENVS[cfg.env]
    sac_cfg = SACConfig(learning_starts=cfg.learning_starts, train_freq=cfg.train_freq)
    sac = get_sac(spec.obs_dim, spec.act_dim, sac_cfg)
    run = _Run(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(cfg.seed)
    key_act, key_upd = jax.random.fold_in(base, 1), jax.random.fold_in(base, 2)
    template = sac.init(jax.random.fold_in(base, 0))
    buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, cfg.sac_steps)

    prog = run.load_progress()
    resumed_from = 0
    state = template
    if prog and prog.get("format") == FORMAT_VERSION and prog.get("config") == cfg.training_key():
        try:
            if prog["step"] > 0:
                state = state_from_flat(template, run.load_arrays(prog["state_file"], prog["state_sha256"]))
                buffer.load(run.load_arrays(prog["buffer_file"], prog["buffer_sha256"]))
                if buffer.size != prog["step"]:
                    raise ValueError("buffer size does not match the step")
            resumed_from = int(prog["step"])
        except (KeyError, ValueError, OSError, TypeError):
            prog, state, resumed_from = None, template, 0
            buffer = ReplayBuffer(spec.obs_dim, spec.act_dim, cfg.sac_steps)
    else:
        prog = None
    if prog is None:
        prog = {"format": FORMAT_VERSION, "config": cfg.training_key(), "step": 0, "checkpoints": [],
                "sac": sac_cfg.to_json(), "done": False}
    if prog.get("done"):
        return prog, resumed_from, True

    step = resumed_from
    bar = tqdm(total=cfg.sac_steps, initial=step, desc=f"SAC {spec.env_id}", unit="step",
               disable=None if progress else True, leave=False)
    try:
        while step < cfg.sac_steps:
            seg_end = min((step // cfg.eval_every + 1) * cfg.eval_every, cfg.sac_steps)
            env = make_env(spec)
            try:
                episode_seed = _seed(cfg.seed, 3, step)
                obs, _ = env.reset(seed=episode_seed)
                while step < seg_end:
                    if step < cfg.learning_starts:
                        act = np.random.default_rng(_seed(cfg.seed, 4, step)).uniform(
                            -1, 1, spec.act_dim).astype(np.float32)
                    else:
                        act = np.asarray(sac.sample_action(state.actor, obs[None].astype(np.float32),
                                                           key_act, step)[0])
                    nxt, r, term, trunc, _ = env.step(act)
                    buffer.add(obs, act, r, term, trunc and not term, nxt)
                    step += 1
                    if term or trunc:
                        obs, _ = env.reset(seed=_seed(cfg.seed, 3, step))
                    else:
                        obs = nxt
                    if step >= cfg.learning_starts and step % cfg.train_freq == 0:
                        batches = buffer.sample(np.random.default_rng(_seed(cfg.seed, 5, step)),
                                                cfg.train_freq, sac_cfg.batch_size)
                        state, _ = sac.update(state, batches, key_upd, step)
                    bar.update(1)
            finally:
                env.close()
            buffer.mark_timeout()  # the checkpoint cuts the training episode

            returns = evaluate(sac, state.actor, spec, cfg.eval_episodes, _seed(cfg.seed, 6, step))
            ckpt_file = f"actor-{step}.safetensors"
            ckpt_sha = run.save_arrays(ckpt_file, state_to_flat(state._replace(
                critic=(), target_critic=(), actor_opt=(), critic_opt=(), alpha_opt=())))
            state_file, buffer_file = f"state-{step}.safetensors", f"buffer-{step}.safetensors"
            state_sha = run.save_arrays(state_file, state_to_flat(state))
            buffer_sha = run.save_arrays(buffer_file, buffer.arrays())
            old = (prog.get("state_file"), prog.get("buffer_file"))
            prog["checkpoints"].append({"step": step, "ret": float(np.mean(returns)), "returns": returns,
                                        "actor_file": ckpt_file, "actor_sha256": ckpt_sha})
            prog.update(step=step, state_file=state_file, state_sha256=state_sha, buffer_file=buffer_file,
                        buffer_sha256=buffer_sha, done=step >= cfg.sac_steps)
            write_json_atomic(run.progress_path, prog)
            for name in old:
                if name and name not in (state_file, buffer_file):
                    (work_dir / name).unlink(missing_ok=True)
            bar.set_postfix(eval_return=f"{np.mean(returns):.1f}")
            if stop_after is not None and step >= stop_after and step < cfg.sac_steps:
                return prog, resumed_from, False
    finally:
        bar.close()
    return prog, resumed_from, True


def select_checkpoints(checkpoints: list[dict]) -> tuple[dict, dict]:
    """(medium, expert): expert = best evaluation return (earliest on ties); medium = the first
    checkpoint reaching a third of it (the expert's own return when that is not positive)."""
    if not checkpoints:
        raise MDPTError("the SAC run has no checkpoints; use --eval-every <= --sac-steps")
    expert = max(checkpoints, key=lambda c: (c["ret"], -c["step"]))
    threshold = expert["ret"] / 3.0 if expert["ret"] > 0 else expert["ret"]
    medium = next(c for c in checkpoints if c["ret"] >= threshold)
    return medium, expert


def _actor_params(run: _Run, sac, ckpt: dict):
    import jax

    from mdpt.data.sac import state_from_flat

    template = sac.init(jax.random.PRNGKey(0))
    template = template._replace(critic=(), target_critic=(), actor_opt=(), critic_opt=(), alpha_opt=())
    return state_from_flat(template, run.load_arrays(ckpt["actor_file"], ckpt["actor_sha256"])).actor


# --------------------------------------------------------------------------------------------
# the command


def make_dataset(
    dataset_id: str,
    out_dir: str | os.PathLike | None = None,
    sac_steps: int = 150_000,
    transitions: int = 100_000,
    seed: int = 0,
    eval_every: int = 10_000,
    eval_episodes: int = 5,
    learning_starts: int = 5000,
    train_freq: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
) -> MakeResult:
    """Make `dataset_id` (and, for medium-expert, both parts) into `out_dir` by the D4RL recipe."""
    import jax

    from mdpt.data.hdf5 import read_raw_hdf5, write_d4rl_hdf5
    from mdpt.data.load import default_data_dir
    from mdpt.data.sac import SACConfig, get_sac

    info = parse_dataset_id(dataset_id)
    for name, value, least in (("--sac-steps", sac_steps, 1), ("--transitions", transitions, 1),
                               ("--eval-every", eval_every, 1), ("--eval-episodes", eval_episodes, 1),
                               ("--learning-starts", learning_starts, 0), ("--train-freq", train_freq, 1)):
        if int(value) != value or value < least:
            raise MDPTError(f"{name} must be an integer >= {least} (got {value})")
    spec = info.env
    cfg = MakeConfig(env=spec.name, sac_steps=sac_steps, transitions=transitions, seed=seed,
                     eval_every=eval_every, eval_episodes=eval_episodes, learning_starts=learning_starts,
                     train_freq=train_freq)
    out = Path(out_dir).expanduser() if out_dir else default_data_dir()
    digest = hashlib.sha256(json.dumps(cfg.training_key(), sort_keys=True).encode()).hexdigest()[:10]
    work_dir = out / ".mdpt-make" / f"{spec.name}-seed{seed}-{digest}"
    run = _Run(work_dir)

    prog, resumed_from, finished = train_sac(cfg, work_dir, progress=progress, stop_after=stop_after)
    result = MakeResult(work_dir=work_dir, resumed_from=resumed_from, completed=finished, log=prog)
    if not finished:
        return result

    sac = get_sac(spec.obs_dim, spec.act_dim, SACConfig(learning_starts=learning_starts, train_freq=train_freq))
    medium, expert = select_checkpoints(prog["checkpoints"])

    def cached(name: str, produce) -> dict[str, np.ndarray]:
        path = work_dir / "rollouts" / f"{name}.hdf5"
        if path.exists():
            try:
                return read_raw_hdf5(path)[0]
            except MDPTError:
                path.unlink(missing_ok=True)
        arrays = produce()
        write_d4rl_hdf5(path, arrays)
        return arrays

    ref_path = work_dir / f"ref-min-{cfg.ref_episodes}.json"
    if ref_path.exists():
        ref_returns = read_json(ref_path, "reference file")["returns"]
    else:
        ref_returns = random_action_returns(spec, cfg.ref_episodes, seed)
        write_json_atomic(ref_path, {"returns": ref_returns})
    n = transitions
    expert_data = cached(f"expert-{n}", lambda: rollout(
        sac, _actor_params(run, sac, expert), spec, n, _seed(seed, 10), "expert rollouts", progress))
    ends = expert_data["terminals"] | expert_data["timeouts"]
    ends[-1] = True
    csum = np.concatenate([[0.0], np.cumsum(expert_data["rewards"], dtype=np.float64)])
    stops = np.flatnonzero(ends) + 1
    starts = np.concatenate([[0], stops[:-1]])
    ref_max = float(np.mean(csum[stops] - csum[starts]))
    ref_min = float(np.mean(ref_returns))

    def checkpoint_info(c):
        return {"step": c["step"], "ret": c["ret"]}

    recipe = {
        "algorithm": "SAC (mdpt.data.sac, JAX)",
        "sac": prog["sac"],
        "sac_steps": sac_steps,
        "eval_every": eval_every,
        "eval_episodes": eval_episodes,
        "transitions": transitions,
        "seed": seed,
        "expert": "best checkpoint",
        "medium": "first checkpoint whose evaluation return >= expert / 3",
        "medium-replay": "replay buffer up to the medium checkpoint",
        "random": "randomly initialised policy",
        "rollouts": "stochastic policy",
    }
    common = {
        "env_id": spec.env_id,
        "recipe": (f"SAC (mdpt JAX, 256x256 MLPs, learning_starts {learning_starts}, seed {seed}) {sac_steps} "
                   f"steps, evaluated every {eval_every} steps ({eval_episodes} deterministic episodes); "
                   f"medium ckpt step {medium['step']} ret {medium['ret']:.1f}; expert ckpt step "
                   f"{expert['step']} ret {expert['ret']:.1f}; rollouts of the stochastic policy"),
        "recipe_json": recipe,
        "versions": versions(),
        "seed": seed,
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "ref_note": (f"ref_min_score: mean return of uniform random actions ({cfg.ref_episodes} episodes); "
                     f"ref_max_score: mean episode return of the expert dataset"),
        "medium_checkpoint": checkpoint_info(medium),
        "expert_checkpoint": checkpoint_info(expert),
        "checkpoints": [checkpoint_info(c) for c in prog["checkpoints"]],
        "made_by": "mdpt data make",
    }

    for quality in QUALITY_FILES[info.quality]:
        qid = f"bullet-{spec.name}-{quality}-v0"
        extra = {"dataset_id": qid, "quality": quality}
        if quality == "expert":
            arrays = expert_data
        elif quality == "medium":
            arrays = cached(f"medium-{n}", lambda: rollout(
                sac, _actor_params(run, sac, medium), spec, n, _seed(seed, 11), "medium rollouts", progress))
        elif quality == "random":
            arrays = cached(f"random-{n}", lambda: rollout(
                sac, sac.init(jax.random.fold_in(jax.random.PRNGKey(seed), 99)).actor, spec, n,
                _seed(seed, 12), "random rollouts", progress))
        else:  # medium-replay
            buf = _Run(work_dir).load_arrays(prog["buffer_file"], prog["buffer_sha256"])
            arrays = {k: np.asarray(v[: medium["step"]]) for k, v in buf.items()}
            if not arrays["terminals"][-1]:
                arrays["timeouts"][-1] = True
            extra["buffer_steps"] = medium["step"]
        path = out / f"{qid}.hdf5"
        write_d4rl_hdf5(path, arrays, {**common, **extra})
        result.written.append(path)

    log = {"recipe": common["recipe"], "medium": checkpoint_info(medium), "expert": checkpoint_info(expert),
           "checkpoints": [{"step": c["step"], "ret": c["ret"], "returns": c["returns"]}
                           for c in prog["checkpoints"]],
           "ref_min_score": ref_min, "ref_max_score": ref_max, "versions": common["versions"]}
    write_json_atomic(out / f"{spec.name}_log.json", log)
    result.log = log
    return result
