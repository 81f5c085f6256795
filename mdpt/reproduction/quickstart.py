"""`mdpt quickstart`: the whole method on a small budget, end to end, offline, on a CPU.

1. find a hopper dataset: the data dir ($MDPT_DATA_DIR, else ~/.cache/mdpt/datasets), else the small
   real MuJoCo one shipped with mdpt (mdpt/datasets/, see its README); nothing is downloaded
   (`--dataset` names another, e.g. the shipped bullet-hopper-medium-v0);
2. train an IQL guidance module (S seeds, vmapped);
3. train DQL jointly (with its own DQL critic) and guidance-first (against the frozen IQL module);
4. swap guidance across seeds and algorithms: every DQL policy seed with every guidance seed, and
   the joint DQL policy with the IQL guidance;
5. write a report with figures.

The default budget takes about 2 minutes on 2 idle CPU cores (MuJoCo hopper 128 s, bullet hopper 86 s); `--tiny`
is for the tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdpt.errors import MDPTError

# The shipped MuJoCo hopper: in the quickstart's budget both DQL policies learn on it (joint 26.6, guidance-first
# 28.5 against the data's 54.1), while on the shipped bullet hopper joint DQL is still at 0.8 (guidance-first 23.5
# against 63.6): measured in mdpt/datasets/README.md, "Which dataset the quickstart uses".
DATASET = "hopper-medium-v2"
FALLBACK_IDS = ("hopper-medium-v2", "bullet-hopper-medium-v0", "bullet-hopper-medium-replay-v0", "bullet-hopper-expert-v0")

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


TINY = Budget(steps=10, guidance_steps=10, seeds=2, hidden=8, depth=1, batch_size=16, chunk=10, eval_every=10,
              eval_episodes=1, eval_max_steps=3, candidates=2)


QUICKSTART_ENTRIES = frozenset({"runs", "transfer", "report"})  # what the quickstart writes in its --out


def find_dataset(out: Path, budget: Budget, log: Callable | None = None, progress: bool = True,
                 dataset: str | None = None):
    """A hopper dataset, offline: `<data dir>/<id>.hdf5` ($MDPT_DATA_DIR, else ~/.cache/mdpt/datasets)
    for the ids in FALLBACK_IDS (a damaged one is an error, not skipped), else the small dataset
    shipped with mdpt. Looks nowhere else. `dataset`: this one instead (a shipped dataset's id, or any
    id or path the loader reads)."""
    log = log or LOG.info
    from mdpt.data.load import dataset_path, default_data_dir, load_dataset
    from mdpt.data.packaged import PACKAGED_DIR, packaged_path

    if dataset is not None:  # the data dir's file of that id first, as everywhere; else the shipped one
        shipped = None if dataset_path(dataset, default_data_dir()).is_file() else packaged_path(dataset)
        data = load_dataset(shipped if shipped else dataset)
        log(f"dataset: {dataset}{' shipped with mdpt' if shipped else ''} ({len(data):,} transitions)")
        return data
    directory = default_data_dir()
    for dataset_id in FALLBACK_IDS:
        if not dataset_path(dataset_id, directory).is_file():
            continue
        data = load_dataset(dataset_id, data_dir=directory, download=False)  # a damaged file is an error
        log(f"dataset: {dataset_id} from {directory} ({len(data):,} transitions)")
        return data
    path = packaged_path(DATASET)
    if path is None:
        raise MDPTError(f"no hopper dataset in {directory}, and this install of mdpt ships none in {PACKAGED_DIR}; "
                        f"make one with `mdpt data make {DATASET} --out {directory}` (or reinstall mdpt)")
    data = load_dataset(path, download=False)
    log(f"dataset: {DATASET} shipped with mdpt, {path} ({len(data):,} transitions; a small dataset, see "
        f"{PACKAGED_DIR / 'README.md'}); put <id>.hdf5 files in {directory} to use others")
    return data


def quickstart(out: str | Path = "mdpt-quickstart", steps: int | None = None, seeds: int | None = None,
               tiny: bool = False, progress: bool = True, log: Callable | None = None,
               dataset: str | None = None) -> Path:
    log = log or LOG.info
    from mdpt.experiments.config import RunConfig
    from mdpt.experiments.rundir import claim_folder
    from mdpt.reports.report import write_report
    from mdpt.reproduction.studies import run_all
    from mdpt.reproduction.transfer import TransferSource, write_transfer

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
    claim_folder(out, QUICKSTART_ENTRIES, "quickstart directory")  # never write into a folder of the user's
    t0 = time.perf_counter()
    log(f"quickstart: output in {out}; budget {b.steps} policy steps, {b.guidance_steps} guidance steps, "
        f"{b.seeds} vmapped seeds, {b.hidden}x{b.depth} networks (a small demo budget, not the paper's)")
    data = find_dataset(out, b, log, progress, dataset)
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
    log("stage 2/4: DQL trained jointly with its critic, and guidance-first against the frozen IQL module; the "
        "baselines BC and IQL's AWR policy (from the same IQL module) at the same budget")
    run_all({"dql-joint": joint_cfg, "dql-guidance-first": gf_cfg}, runs, log, progress, dataset=data)
    baseline = {k: v for k, v in policy.items() if k not in ("eval_variants", "candidates")}
    run_all({name: RunConfig.from_dict({**common, **baseline, "algo": algo, "mode": "guidance-first",
                                        "guidance_kind": "iql", "guidance_path": gf_cfg.stage1.guidance_path})
             for name, algo in (("bc", "bc"), ("iql-awr", "awr"))}, runs, log, progress, dataset=data)
    log("stage 3/4: swapping guidance across seeds and algorithms")
    sources = [TransferSource("dql-joint", runs / "dql-joint" / "policy", "dql-critic", runs / "dql-joint" / "guidance"),
               TransferSource("dql-gfdt", runs / "dql-guidance-first" / "policy", "iql",
                              runs / "iql-guidance" / "guidance")]
    transfer = write_transfer(sources, out / "transfer", joint_cfg, b.eval_episodes, b.eval_max_steps, log=log)
    log("stage 4/4: report")
    path = write_report([runs / "dql-joint", runs / "dql-guidance-first", runs / "bc", runs / "iql-awr", transfer],
                        out / "report")
    log(f"quickstart finished in {(time.perf_counter() - t0) / 60:.1f} min")
    log(f"report: {path}")
    return path
