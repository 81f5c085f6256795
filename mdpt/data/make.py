"""Make a D4RL-style dataset locally, by the D4RL recipe (`mdpt data make ID`): a bullet id on its
PyBullet env, a MuJoCo v2 id (`hopper-medium-v2`) on Gymnasium's MuJoCo env (`Hopper-v5`).

Recipe (D4RL's, at a size of your choice): train SAC online on the env, checkpoint and
evaluate it every `eval_every` steps (deterministic episodes; `sac_run.py`); `expert` = the best
checkpoint, `medium` = the first checkpoint whose evaluation return reaches a third of the
expert's, `medium-replay` = the replay buffer up to the medium checkpoint, `random` = a randomly
initialised policy, `medium-expert` = medium + expert (both files are written; the loader
concatenates them). Datasets are rollouts of the stochastic policy (`rollouts.py`). Reference
returns: `ref_min_score` = mean return of uniform random actions over 10 episodes,
`ref_max_score` = mean episode return of the expert data.

Layouts: D4RL HDF5 (`<out>/<id>.hdf5`), or with `layout="minari"` a Minari dataset per quality
(`<out>/<minari id>/`, e.g. `mdpt/hopper-mujoco/medium-v0`; loadable by that id with
`MINARI_DATASETS_PATH=<out>`).

Everything is seeded: the same arguments give the same file. An interrupted make resumes from
its last checkpoint; rollouts already made are kept in the work directory and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdpt.data.dataset import episode_returns
from mdpt.data.registry import d4rl_mismatch, parse_dataset_id
from mdpt.data.rollouts import derive_seed, random_action_returns, rollout
from mdpt.data.sac_run import MakeConfig, WorkDir, actor_params, select_checkpoints, train_sac
from mdpt.errors import MDPTError
from mdpt.io import read_json, versions, write_json_atomic
from mdpt.settings import check_count

__all__ = ["QUALITY_FILES", "MakeConfig", "MakeResult", "make_dataset", "select_checkpoints"]

LAYOUTS = ("d4rl", "minari")
QUALITY_FILES = {  # requested quality -> qualities written
    "random": ("random",),
    "medium": ("medium",),
    "expert": ("expert",),
    "medium-replay": ("medium-replay",),
    "medium-expert": ("medium", "expert"),
}


@dataclass
class MakeResult:
    written: list[Path] = field(default_factory=list)
    work_dir: Path | None = None
    completed: bool = True
    resumed_from: int = 0  # SAC step the run resumed from (0: fresh)
    log: dict = field(default_factory=dict)


def _check_replaceable(path: Path) -> None:
    """`path` is absent or a file an earlier `mdpt data make` wrote (its attrs say so); else one line."""
    if not path.exists():
        return
    try:
        import h5py

        with h5py.File(path, "r") as f:
            made_by = f.attrs.get("made_by")
    except OSError:
        made_by = None
    if made_by != "mdpt data make":
        raise MDPTError(f"{path}: exists and was not made by mdpt data make (e.g. a downloaded dataset); move it "
                        "away or choose another --out")


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
    layout: str = "d4rl",
) -> MakeResult:
    """Make `dataset_id` (and, for medium-expert, both parts) into `out_dir` by the D4RL recipe."""
    import jax

    from mdpt.data.hdf5 import read_raw_hdf5
    from mdpt.data.hdf5_write import write_d4rl_hdf5
    from mdpt.data.load import default_data_dir
    from mdpt.data.sac import SACConfig, get_sac

    info = parse_dataset_id(dataset_id)
    mismatch = d4rl_mismatch(info)
    if mismatch:
        raise MDPTError(mismatch)
    if layout not in LAYOUTS:
        raise MDPTError(f"unknown layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
    big = 100_000_000
    for name, value, least, most in (("--sac-steps", sac_steps, 1, big), ("--transitions", transitions, 1, big),
                                     ("--eval-every", eval_every, 1, big), ("--eval-episodes", eval_episodes, 1, 1000),
                                     ("--learning-starts", learning_starts, 0, big),
                                     ("--train-freq", train_freq, 1, 1_000_000)):
        check_count(value, name, least, most)
    check_count(seed, "--seed", 0, 2**31 - 1, "seeds are 32-bit")
    spec = info.env
    cfg = MakeConfig(env=spec.name if info.family == "bullet" else spec.env_id, sac_steps=sac_steps,
                     transitions=transitions, seed=seed, eval_every=eval_every, eval_episodes=eval_episodes,
                     learning_starts=learning_starts, train_freq=train_freq)
    out = Path(out_dir).expanduser() if out_dir else default_data_dir()
    for quality in QUALITY_FILES[info.quality]:  # before hours of SAC: never replace a file that is not ours
        _check_replaceable(out / f"bullet-{spec.name}-{quality}-v0.hdf5")
    digest = hashlib.sha256(json.dumps(cfg.training_key(), sort_keys=True).encode()).hexdigest()[:10]
    work_dir = out / ".mdpt-make" / f"{cfg.env}-seed{seed}-{digest}"
    run = WorkDir(work_dir)

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
        sac, actor_params(run, sac, expert), spec, n, derive_seed(seed, 10), "expert rollouts", progress))
    ref_max = float(np.mean(episode_returns(expert_data["rewards"],
                                            expert_data["terminals"] | expert_data["timeouts"])))
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
        qid = f"bullet-{spec.name}-{quality}-v0" if info.family == "bullet" else f"{spec.name}-{quality}-v2"
        extra = {"dataset_id": qid, "quality": quality}
        if quality == "expert":
            arrays = expert_data
        elif quality == "medium":
            arrays = cached(f"medium-{n}", lambda: rollout(
                sac, actor_params(run, sac, medium), spec, n, derive_seed(seed, 11), "medium rollouts", progress))
        elif quality == "random":
            arrays = cached(f"random-{n}", lambda: rollout(
                sac, sac.init(jax.random.fold_in(jax.random.PRNGKey(seed), 99)).actor, spec, n,
                derive_seed(seed, 12), "random rollouts", progress))
        else:  # medium-replay
            buf = run.load_arrays(prog["buffer_file"], prog["buffer_sha256"])
            arrays = {k: np.asarray(v[: medium["step"]]) for k, v in buf.items()}
            if not arrays["terminals"][-1]:
                arrays["timeouts"][-1] = True
            extra["buffer_steps"] = medium["step"]
        if layout == "minari":
            from mdpt.data.checks import build_dataset
            from mdpt.data.minari_io import minari_id, write_minari

            data = build_dataset(arrays, spec, source=qid, dataset_id=qid, attrs={**common, **extra})
            mid = minari_id(qid, spec)
            path = write_minari(out / mid, data, dataset_id=mid, overwrite=True)
        else:
            path = out / f"{qid}.hdf5"
            write_d4rl_hdf5(path, arrays, {**common, **extra})
        result.written.append(path)

    log = {"recipe": common["recipe"], "medium": checkpoint_info(medium), "expert": checkpoint_info(expert),
           "checkpoints": [{"step": c["step"], "ret": c["ret"], "returns": c["returns"], "train": c.get("train", {})}
                           for c in prog["checkpoints"]],  # train: SAC's mean losses, alpha, Q and entropy
           "ref_min_score": ref_min, "ref_max_score": ref_max, "versions": common["versions"]}
    write_json_atomic(out / f"{cfg.env}_log.json", log)
    result.log = log
    return result
