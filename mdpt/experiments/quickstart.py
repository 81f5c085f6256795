"""`mdpt quickstart`: the whole method on a small budget, end to end, offline, on a CPU.

1. find a bullet hopper dataset (the data dir, ../shared/datasets), or make a small one by the
   D4RL recipe with a tiny SAC budget;
2. train an IQL guidance module (S seeds, vmapped);
3. train DQL jointly (with its own DQL critic) and guidance-first (against the frozen IQL module);
4. swap guidance across seeds and algorithms: every DQL policy seed with every guidance seed, and
   the joint DQL policy with the IQL guidance;
5. write a report with figures.

The default budget is sized for about 10 minutes on 2 CPU cores; `--tiny` is for the tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdpt.errors import MDPTError

DATASET = "bullet-hopper-medium-v0"
FALLBACK_IDS = ("bullet-hopper-medium-v0", "bullet-hopper-medium-replay-v0", "bullet-hopper-expert-v0")

LOG = logging.getLogger("mdpt")


@dataclass(frozen=True)
class Budget:
    steps: int = 5000
    guidance_steps: int = 5000
    seeds: int = 3
    hidden: int = 64
    depth: int = 2
    batch_size: int = 256
    chunk: int = 500
    eval_every: int = 2500
    eval_episodes: int = 3
    eval_max_steps: int | None = 500
    candidates: int = 16
    # dataset made when none is found (a tiny SAC budget: a weak "medium" policy)
    sac_steps: int = 12000
    transitions: int = 20_000


TINY = Budget(steps=10, guidance_steps=10, seeds=2, hidden=8, depth=1, batch_size=16, chunk=10, eval_every=10,
              eval_episodes=1, eval_max_steps=3, candidates=2, sac_steps=300, transitions=500)


def _shared_dirs() -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    dirs = [Path.cwd().parent / "shared" / "datasets", repo.parent / "shared" / "datasets",
            Path.cwd() / "shared" / "datasets"]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_dataset(out: Path, budget: Budget, log: Callable | None = None, progress: bool = True):
    """A hopper dataset: the data dir, then ../shared/datasets, else make a small one in out/data."""
    log = log or LOG.info
    from mdpt.data.load import default_data_dir, load_dataset

    for dataset_id in FALLBACK_IDS:
        for where in [None, *_shared_dirs(), out / "data"]:
            try:
                data = load_dataset(dataset_id, data_dir=where, download=False)
            except MDPTError:
                continue
            log(f"dataset: {dataset_id} from {where or default_data_dir()} ({len(data):,} transitions)")
            return data
    from mdpt.data.make import make_dataset

    log(f"dataset: no hopper dataset found; making a SMALL {DATASET} in {out / 'data'} "
        f"(SAC for only {budget.sac_steps} steps, {budget.transitions} transitions: a weak policy's data)")
    make_dataset(DATASET, out / "data", sac_steps=budget.sac_steps, transitions=budget.transitions,
                 eval_every=max(1, budget.sac_steps // 3), eval_episodes=1,
                 learning_starts=min(1000, budget.sac_steps // 3), progress=progress)
    return load_dataset(DATASET, data_dir=out / "data", download=False)


def quickstart(out: str | Path = "mdpt-quickstart", steps: int | None = None, seeds: int | None = None,
               tiny: bool = False, progress: bool = True, log: Callable | None = None) -> Path:
    log = log or LOG.info
    from mdpt.experiments.config import RunConfig
    from mdpt.experiments.report import write_report
    from mdpt.experiments.studies import TransferSource, run_all, write_transfer

    b = TINY if tiny else Budget()
    if steps is not None:
        if steps < 1:
            raise MDPTError(f"--steps must be >= 1, got {steps}")
        b = Budget(**{**b.__dict__, "steps": steps, "guidance_steps": steps,
                      "eval_every": max(1, steps // 2), "chunk": min(b.chunk, steps)})
    if seeds is not None:
        if seeds < 1:
            raise MDPTError(f"--seeds must be >= 1, got {seeds}")
        b = Budget(**{**b.__dict__, "seeds": seeds})
    out = Path(out)
    t0 = time.perf_counter()
    log(f"quickstart: output in {out}; budget {b.steps} policy steps, {b.guidance_steps} guidance steps, "
        f"{b.seeds} vmapped seeds, {b.hidden}x{b.depth} networks (a small demo budget, not the paper's)")
    data = find_dataset(out, b, log, progress)
    # the id names the data in reports; the loaded dataset is handed to every Run
    source = data.dataset_id or str(Path(str(data.source)).resolve())
    nets = {"policy": {"hidden": b.hidden, "depth": b.depth}, "guidance": {"hidden": b.hidden, "depth": b.depth}}
    common = {"dataset": source, "seeds": b.seeds, "batch_size": b.batch_size, "chunk": b.chunk, **nets}
    runs = out / "runs"
    guidance_cfg = RunConfig.from_dict({**common, "guidance_kind": "iql", "steps": b.guidance_steps})
    policy = {"algo": "dql", "steps": b.steps, "eval_every": b.eval_every, "eval_episodes": b.eval_episodes,
              "eval_max_steps": b.eval_max_steps, "eval_variants": ["guided", "unguided"], "candidates": b.candidates}
    joint_cfg = RunConfig.from_dict({**common, **policy, "mode": "joint", "guidance_kind": "dql-critic"})
    gf_cfg = RunConfig.from_dict({**common, **policy, "mode": "guidance-first", "guidance_kind": "iql",
                                  "guidance_path": str((runs / "iql-guidance" / "guidance").resolve())})
    log("stage 1/4: IQL guidance module (value estimator trained from the data alone)")
    run_all({"iql-guidance": guidance_cfg}, runs, log, progress, dataset=data)
    log("stage 2/4: DQL trained jointly with its critic, and guidance-first against the frozen IQL module")
    run_all({"dql-joint": joint_cfg, "dql-guidance-first": gf_cfg}, runs, log, progress, dataset=data)
    log("stage 3/4: swapping guidance across seeds and algorithms")
    sources = [TransferSource("dql-joint", runs / "dql-joint" / "policy", "dql-critic", runs / "dql-joint" / "guidance"),
               TransferSource("dql-gfdt", runs / "dql-guidance-first" / "policy", "iql",
                              runs / "iql-guidance" / "guidance")]
    transfer = write_transfer(sources, out / "transfer", joint_cfg, b.eval_episodes, b.eval_max_steps, log=log)
    log("stage 4/4: report")
    path = write_report([runs / "dql-joint", runs / "dql-guidance-first", transfer], out / "report")
    log(f"quickstart finished in {(time.perf_counter() - t0) / 60:.1f} min")
    log(f"report: {path}")
    return path
