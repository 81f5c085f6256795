"""A guidance-first run whose policy is its joint run's: trained for one chunk, then derived.

A policy whose loss never reads its guidance (IDQL: pure BC diffusion) trains bit for bit the same
in joint and guidance-first mode from the same seeds: the same initialization, the same batches,
the same noise (`tests/test_algorithms.py::test_an_idql_policy_trains_bit_identically_in_both_modes`).
The two modes differ only in the guidance that selects actions at inference. So `DerivedRun` trains
its first chunk with its own (guidance-first) program, which checks the claim against the joint
run's first chunk and times this mode's step, and then takes every later evaluation's policy from
the joint run's snapshot of that step and evaluates it with its own guidance, as a trained run
would. If the first chunk differs in any loss value, or a snapshot is missing, it trains instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

from mdpt.artifacts import load_policy
from mdpt.experiments.run_checks import recorded_metrics
from mdpt.experiments.rundir import MetricsLog, snapshot_dir
from mdpt.experiments.runner import Run


def policy_ignores_guidance(algo: str | None) -> bool:
    """Whether an algorithm's policy loss never reads the guidance (so its modes train the same policy)."""
    return algo == "idql"


class DerivedRun(Run):
    """A guidance-first run of a policy that ignores its guidance in training, derived from `joint_dir`."""

    def __init__(self, run_dir, config, joint_dir, **kw):
        super().__init__(run_dir, config, resume=True, **kw)
        self.joint_dir = Path(joint_dir)
        self.derived = False

    def _train(self) -> dict:
        c = self.config
        if (self.dir / "checkpoints").exists() or (self.dir / "summary.json").exists():
            return super()._train()  # trained before (a fallback), or finished: as any run
        joint_rows = MetricsLog(self.joint_dir / "metrics.jsonl").rows()
        self.metrics.truncate_after(0)  # a derivation cut short starts again: it is cheap
        state = self.trainer.init(c.seed_list)
        n = self._chunk_length(0)
        if not self.defer_evaluation:
            self.check_evaluation_memory(state)
        self.check_training_memory(state, n)
        self.claim_dir()
        t0 = time.perf_counter()
        state, m = self.trainer.run(state, n, start=0)
        jax.block_until_ready(state)
        seconds_per_step = (time.perf_counter() - t0) / n
        why = self._why_not_derived(m, n, joint_rows)
        if why:
            self.log(f"{self.dir.name}: not derived from {self.joint_dir} ({why}); training it")
            self.metrics.truncate_after(0)
            return super()._train()
        self.derived = True
        self.log(f"{self.dir.name}: its first {n} steps equal {self.joint_dir.name}'s bit for bit; "
                 "the rest of its policy is taken from that run's snapshots")
        self.record_chunk(m, 0, n, seconds_per_step * n)
        self.evaluate_at(state, n)
        for row in joint_rows:
            if row["phase"] != "train" or row["step"] <= n:
                continue
            self.record({**{k: v for k, v in row.items() if not k.startswith("guidance/")}, "wall_s": 0.0,
                         "derived_from": str(self.joint_dir.resolve())})
            if self.evaluation_due(row["step"]):
                self.evaluate_at(self._joint_state(row["step"]), row["step"])
        self.state = self._joint_state(c.steps)
        return self.finish(self.state, seconds_per_step)

    def _why_not_derived(self, m: dict, n: int, joint_rows: list[dict]) -> str | None:
        """None when the first chunk equals the joint run's and every snapshot is there; else why not."""
        c = self.config
        first = next((r for r in joint_rows if r["phase"] == "train"), None)
        if first is None or first["step"] != n:
            return "its metrics do not start with the same chunk"
        for key, value in recorded_metrics(m).items():
            if key.startswith("policy/") and (key not in first or first[key] != value):
                return f"{key} of the first chunk differs"
        steps = [r["step"] for r in joint_rows if r["phase"] == "train"]
        if steps[-1] != c.steps:
            return f"it trained to step {steps[-1]}, not {c.steps}"
        due = [s for s in steps if s > n and self.evaluation_due(s)] + [c.steps]
        missing = [s for s in due if not (self._policy_at(s) / "meta.json").exists()]
        return f"no policy saved at step {missing[0]}" if missing else None

    def _policy_at(self, step: int) -> Path:
        """The joint run's policy of a step: its snapshot, or its final artifact at the last step."""
        if step == self.config.steps:
            return self.joint_dir / "policy"
        return snapshot_dir(self.joint_dir, step) / "policy"

    def _joint_state(self, step: int) -> dict:
        """The part of a training state that evaluation and the saved artifacts read: the EMA policy."""
        return {"policy": {"ema": load_policy(self._policy_at(step)).params}}

    def summary(self, seconds_per_step, peak_memory="measure") -> dict:
        summary = super().summary(seconds_per_step, peak_memory)
        if not self.derived:
            return summary
        return {**summary, "derived_from": {"run": str(self.joint_dir.resolve()), "trained_steps": self._chunk_length(0),
                                 "rule": "the policy's loss never reads its guidance: the joint run's policy, "
                                         "checked bit for bit on the first chunk"}}
