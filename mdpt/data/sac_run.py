"""SAC trained online for `mdpt data make`, with checkpoints, evaluations and exact resuming.

Work is kept in one directory per run (`<out>/.mdpt-make/<env>-seed<S>-<hash>/`): SAC state,
replay buffer and actor checkpoints as safetensors with their sha256, progress as JSON written
last (the commit point). An interrupted run resumes from its last checkpoint; a damaged one
starts over. To make resuming exact, every checkpoint also cuts the training episode (marked as
a timeout) and starts a fresh env.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mdpt.data.rollouts import derive_seed, evaluate, make_env
from mdpt.errors import MDPTError
from mdpt.io import load_arrays, read_json, save_arrays, write_json_atomic

FORMAT_VERSION = 1  # of run.json


@dataclass(frozen=True)
class MakeConfig:
    """Settings of one `mdpt data make`: the SAC run (`training_key`) and the rollout sizes."""

    env: str  # bullet short name (hopper, ...) or a Gymnasium id (Hopper-v5, ...)
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


class WorkDir:
    """The work directory of one SAC run: `run.json` (progress, the commit point) and safetensors
    files (state, replay buffer, actor checkpoints), each with its sha256 in the progress."""

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
        return save_arrays(self.dir / name, arrays)

    def load_arrays(self, name: str, sha256: str) -> dict[str, np.ndarray]:
        return load_arrays(self.dir / name, sha256, what="make work file",
                           hint=f"delete {self.dir} and run `mdpt data make` again")


def train_sac(cfg: MakeConfig, work_dir: Path, progress: bool = True,
              stop_after: int | None = None) -> tuple[dict, int, bool]:
    """Train (or resume) SAC; return (progress dict, step resumed from, finished?).

    Checkpoints at every multiple of `eval_every` and at the last step: evaluation returns, the
    actor's parameters, then the full state and buffer, then `run.json` (the commit point).
    `stop_after`: return once a checkpoint at or past this step is saved (used to test resuming).
    """
    import jax
    from tqdm.auto import tqdm

    from mdpt.data.registry import env_spec_for
    from mdpt.data.sac import ReplayBuffer, SACConfig, get_sac, state_from_flat, state_to_flat

    spec = env_spec_for(cfg.env)
    sac_cfg = SACConfig(learning_starts=cfg.learning_starts, train_freq=cfg.train_freq)
    sac = get_sac(spec.obs_dim, spec.act_dim, sac_cfg)
    run = WorkDir(work_dir)
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
        except (KeyError, ValueError, OSError, TypeError, MDPTError):  # damaged: start over
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
            sums: dict[str, float] = {}  # the segment's update metrics, averaged into its checkpoint
            calls = 0
            try:
                episode_seed = derive_seed(cfg.seed, 3, step)
                obs, _ = env.reset(seed=episode_seed)
                while step < seg_end:
                    if step < cfg.learning_starts:
                        act = np.random.default_rng(derive_seed(cfg.seed, 4, step)).uniform(
                            -1, 1, spec.act_dim).astype(np.float32)
                    else:
                        act = np.asarray(sac.sample_action(state.actor, obs[None].astype(np.float32),
                                                           key_act, step)[0])
                    nxt, r, term, trunc, _ = env.step(act)
                    buffer.add(obs, act, r, term, trunc and not term, nxt)
                    step += 1
                    if term or trunc:
                        obs, _ = env.reset(seed=derive_seed(cfg.seed, 3, step))
                    else:
                        obs = nxt
                    if step >= cfg.learning_starts and step % cfg.train_freq == 0:
                        batches = buffer.sample(np.random.default_rng(derive_seed(cfg.seed, 5, step)),
                                                cfg.train_freq, sac_cfg.batch_size)
                        state, metrics = sac.update(state, batches, key_upd, step)
                        calls += 1
                        for name, value in metrics.items():
                            sums[name] = sums.get(name, 0.0) + value
                    bar.update(1)
            finally:
                env.close()
            buffer.mark_timeout()  # the checkpoint cuts the training episode

            returns = evaluate(sac, state.actor, spec, cfg.eval_episodes, derive_seed(cfg.seed, 6, step))
            ckpt_file = f"actor-{step}.safetensors"
            ckpt_sha = run.save_arrays(ckpt_file, state_to_flat(state._replace(
                critic=(), target_critic=(), actor_opt=(), critic_opt=(), alpha_opt=())))
            state_file, buffer_file = f"state-{step}.safetensors", f"buffer-{step}.safetensors"
            state_sha = run.save_arrays(state_file, state_to_flat(state))
            buffer_sha = run.save_arrays(buffer_file, buffer.arrays())
            old = (prog.get("state_file"), prog.get("buffer_file"))
            prog["checkpoints"].append({"step": step, "ret": float(np.mean(returns)), "returns": returns,
                                        "actor_file": ckpt_file, "actor_sha256": ckpt_sha,
                                        "train": {k: float(v) / calls for k, v in sums.items()} if calls else {}})
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


def actor_params(run: WorkDir, sac, ckpt: dict):
    """The actor parameters of checkpoint `ckpt` (an entry of the progress' `checkpoints`)."""
    import jax

    from mdpt.data.sac import state_from_flat

    template = sac.init(jax.random.PRNGKey(0))
    template = template._replace(critic=(), target_critic=(), actor_opt=(), critic_opt=(), alpha_opt=())
    return state_from_flat(template, run.load_arrays(ckpt["actor_file"], ckpt["actor_sha256"])).actor
