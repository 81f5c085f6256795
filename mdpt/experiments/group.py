"""Several runs that differ only in their dataset (one environment) trained as one program.

On an accelerator a program with 5 seeds leaves the device mostly idle; stacking the datasets of
one environment (their observation and action sizes agree) multiplies the replicas per program
at almost no cost per step. Each run keeps its own directory, exactly as a `Run` writes it
(config.json, metrics.jsonl, checkpoints/, snapshots/, artifacts, summary.json), and computes what
it would have computed alone with the same seeds (tested). With `defer_evaluation` (a machine
without the simulator) each run keeps a snapshot at each of its evaluation steps and ends with
`status: trained`; `Run.execute()` (e.g. by `mdpt reproduce`) evaluates them later on a machine
with the simulator. Without it, each run is evaluated at its evaluation steps during training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from mdpt.data.batches import stack_arrays
from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.experiments.rundir import RUN_ENTRIES, RunLock, claim_folder, remove_stale_temporaries
from mdpt.experiments.runner import LOG, TRAIN_LOWER, Run
from mdpt.io import read_json
from mdpt.training.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from mdpt.training.profiling import check_memory, out_of_memory_as_error
from mdpt.training.trainer import Trainer

# settings that may differ between the runs of a group
PER_RUN = ("dataset", "stage1")
GROUP_LOWER = TRAIN_LOWER + ", or group fewer runs"


def _shared(config: RunConfig) -> dict:
    """The settings that shape the program: all but the dataset, the stage-1 source, the selection
    beta (not part of training) and clip norms (values in the optimizer state; set or not must agree)."""
    d = config.to_json()
    for key in PER_RUN + ("preset",):
        d.pop(key)
    d["selector"].pop("beta")
    for section in ("policy", "guidance"):
        d[section]["grad_clip"] = d[section]["grad_clip"] is not None
    return d


def group_signature(config: RunConfig) -> str:
    """Equal for runs that may train as one program (they differ only in their dataset and stage-1 source)."""
    return json.dumps(_shared(config), sort_keys=True)


def check_groupable(configs: list[RunConfig]) -> None:
    first = configs[0]
    for c in configs[1:]:
        if _shared(c) != _shared(first):
            a, b = _shared(first), _shared(c)
            differ = sorted(k for k in a if a[k] != b.get(k))
            raise MDPTError(f"runs on {first.dataset} and {c.dataset} differ in {', '.join(differ)}; "
                            "only their datasets may differ to train them as one program")


def _stack(trees: list):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _index(tree, d: int):
    return jax.tree.map(lambda x: x[d], tree)


class GroupRun:
    """Train `items` [(run_dir, config)] as one program; `deadline` (time.monotonic()) stops at the
    first chunk boundary after it, with a checkpoint in every run, so that a later call resumes."""

    def __init__(self, items: list[tuple[str | Path, RunConfig]], log: Callable | None = None,
                 deadline: float | None = None, datasets: dict | None = None, defer_evaluation: bool = True):
        if not items:
            raise MDPTError("a group needs at least one run")
        self.runs = [Run(Path(d), c.validate(), resume=True, progress=False, log=log,
                         dataset=(datasets or {}).get(c.dataset), defer_evaluation=defer_evaluation) for d, c in items]
        check_groupable([r.config for r in self.runs])
        if self.config.stage1.unfreeze_at is not None:
            raise MDPTError("runs that unfreeze their guidance (stage1.unfreeze_at) change program mid-run; "
                            "train them one by one")
        self.log = log or LOG.info
        self.deadline = deadline

    @property
    def config(self) -> RunConfig:
        return self.runs[0].config

    def _build(self) -> Trainer:
        for r in self.runs:
            r.check_dir()
            r.build()
        t0 = self.runs[0].trainer
        dims = {(r.dataset.obs_dim, r.dataset.act_dim) for r in self.runs}
        if len(dims) > 1:
            raise MDPTError(f"a group needs one environment; these datasets have obs/act sizes {sorted(dims)}")
        frozen_keys = {tuple(sorted(r.trainer.frozen)) for r in self.runs}
        if len(frozen_keys) > 1:
            raise MDPTError("the runs of a group need frozen modules of the same kind (e.g. guidance trained on "
                            "each run's own dataset)")
        frozen = {k: _stack([r.trainer.frozen[k] for r in self.runs]) for k in t0.frozen}
        return Trainer(stack_arrays([r.arrays for r in self.runs]), t0.policy, t0.guidance, t0.policy_role,
                       t0.guidance_role, t0.batch_size, frozen, groups=len(self.runs))

    def _restore(self):
        """The stacked state: each run's checkpoint, or its own initial state (own clip norms)."""
        steps, states = [], []
        for r in self.runs:
            initial = r.trainer.init(self.config.seed_list)
            restored = load_checkpoint(r.dir / "checkpoints", initial)
            steps.append(restored[1]["step"] if restored else 0)
            states.append(restored[0] if restored else initial)
            if restored:
                prune_checkpoints(r.dir / "checkpoints", keep=restored[1]["file"])
        if len(set(steps)) > 1:
            raise MDPTError(f"the runs of this group stopped at different steps {steps}; resume them one by one")
        return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states), steps[0]

    def execute(self) -> list[dict]:
        locks = [RunLock(r.dir) for r in self.runs]
        for r in self.runs:
            claim_folder(r.dir, RUN_ENTRIES, "run directory")
        for r in self.runs:
            r.dir.mkdir(parents=True, exist_ok=True)
        for lock in locks:
            lock.__enter__()
        try:
            for r in self.runs:
                remove_stale_temporaries(r.dir)
            with out_of_memory_as_error(f"the group of {len(self.runs)} runs", GROUP_LOWER):
                return self._train()
        finally:
            for lock in reversed(locks):
                lock.__exit__(None, None, None)

    def _train(self) -> list[dict]:
        c = self.config
        trainer = self._build()
        state, step = self._restore()
        for r in self.runs:
            r.metrics.truncate_after(step)
        if step >= c.steps and all((r.dir / "summary.json").exists() for r in self.runs):
            return [read_json(r.dir / "summary.json") for r in self.runs]
        if step < c.steps:
            for d, r in enumerate(self.runs):
                if not r.defer_evaluation:
                    r.check_evaluation_memory(_index(state, d))
            what = f"the grouped training step ({len(self.runs)} datasets x {c.seeds} seeds x batch {c.batch_size})"
            check_memory(trainer.compiled(state, min(c.chunk, c.steps - step)), what, GROUP_LOWER)
        for d, r in enumerate(self.runs):
            r.claim_dir()
            if step > 0:  # killed while evaluating or keeping a snapshot (its checkpoint came first)
                r.evaluate_at(_index(state, d), step, done=r.evaluated_variants(step))
        self.log(f"group of {len(self.runs)} runs x {c.seeds} seeds ({', '.join(r.config.dataset for r in self.runs)}) "
                 f"from step {step} to {c.steps}")
        timed_steps, timed_seconds, first = 0, 0.0, True
        while step < c.steps:
            n = min(c.chunk, c.steps - step)
            t0 = time.perf_counter()
            state, m = trainer.run(state, n, start=step)
            jax.block_until_ready(state)
            dt = time.perf_counter() - t0
            if not first:
                timed_steps, timed_seconds = timed_steps + n, timed_seconds + dt
            first = False
            step += n
            for d, r in enumerate(self.runs):  # every run checkpoints below: a group resumes from one step
                r.record_chunk(_index(m, d), step - n, n, dt, group=len(self.runs))
            out_of_time = self.deadline is not None and time.monotonic() > self.deadline and step < c.steps
            due = self.runs[0].evaluation_due(step)  # the runs share their evaluation settings
            if step >= c.steps or out_of_time or due or (c.checkpoint_every and step % c.checkpoint_every < n):
                for d, r in enumerate(self.runs):
                    save_checkpoint(r.dir / "checkpoints", _index(state, d), step)
            if due:
                for d, r in enumerate(self.runs):
                    r.evaluate_at(_index(state, d), step)
            if out_of_time:
                self.log(f"group stopped at step {step} of {c.steps} (time limit); a later call resumes it")
                return []
        per_step = timed_seconds / timed_steps if timed_steps else None
        from mdpt.training.profiling import compiled_peak_bytes

        try:
            peak = compiled_peak_bytes(trainer.compiled(state, min(c.chunk, c.steps))) - trainer.dataset_bytes
        except Exception:  # best effort, as for a single run
            peak = None
        summaries = []
        for d, r in enumerate(self.runs):
            r.trainer = Trainer(r.arrays, trainer.policy, trainer.guidance, trainer.policy_role, trainer.guidance_role,
                                trainer.batch_size, r.trainer.frozen)
            summaries.append(r.finish(_index(state, d), per_step, peak, group=[x.config.dataset for x in self.runs],
                                      cost_note=f"time per step and peak memory of one program for "
                                                f"{len(self.runs)} datasets x {c.seeds} seeds"))
        return summaries
