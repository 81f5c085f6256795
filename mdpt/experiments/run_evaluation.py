"""A run's evaluations (`RunEvaluation`, a part of `runner.Run`): the variants due at a step, on the
curve's or the final protocol, their metrics rows, the snapshots they keep, `best/`, and the deferred
evaluation of a run trained without the simulator."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mdpt.agent import Agent
from mdpt.artifacts import Artifact, dataset_record, load_guidance, load_policy
from mdpt.data.registry import normalized_score
from mdpt.errors import MDPTError
from mdpt.evaluation.api import check_agent, evaluate_agent, variant_agent
from mdpt.experiments.run_checks import to_list
from mdpt.experiments.rundir import snapshot_dir
from mdpt.guidance.module import GuidanceModule
from mdpt.io import atomic_dir, read_json, write_json_atomic
from mdpt.seeding import EVAL_ENV_SEED


class RunEvaluation:
    """The evaluation half of `Run` (it reads the run's config, trainer, dataset and metrics)."""

    def check_evaluation_memory(self, state) -> None:
        """Refuse an evaluation whose act step cannot fit, before training starts."""
        self._check_evaluation_memory(*self.current_artifacts(state))

    def _check_evaluation_memory(self, policy: Artifact | None, guidance: Artifact | None) -> None:
        c = self.config
        if not c.algo or not c.eval.variants:
            return
        for final in (False, True):
            selector, episodes = self._eval_setting(final)
            for variant in c.eval.variants:
                check_agent(self._variant_agent(variant, policy, guidance, selector), episodes)

    def _eval_setting(self, final: bool):
        """(selector, episodes) of an evaluation along the curve or at the last step."""
        c = self.config
        episodes = c.eval.final_episodes if final and c.eval.final_episodes else c.eval.episodes
        selector = c.selector
        if not final and c.eval.curve_candidates:
            selector = dataclasses.replace(selector, candidates=c.eval.curve_candidates)
        return selector, episodes

    def _meta(self) -> dict:
        return {"dataset": dataset_record(self.dataset), "seeds": self.config.seed_list,
                "selection": {"selector": self.config.selector.selector, "beta": self.config.selector.beta},
                "sampling": {"candidates": self.config.selector.candidates,
                             "temperature": self.config.selector.temperature}}

    def current_artifacts(self, state) -> tuple[Artifact | None, Artifact | None]:
        meta = self._meta()
        pol = gui = None
        if self.config.algo:
            pol = Artifact(self.trainer.policy, state["policy"]["ema"], self.normalizer, meta, self.dir / "policy")
        if self.trainer.guidance_role == "train":
            gui = Artifact(self.trainer.guidance, GuidanceModule.saved_params(state["guidance"]), self.normalizer, meta,
                           self.dir / "guidance")
        elif self.frozen_guidance is not None:
            gui = self.frozen_guidance
        return pol, gui

    def trained_status(self) -> str:
        """A trained run's status: 'trained' while evaluations deferred to another machine are pending."""
        c = self.config
        return "trained" if self.defer_evaluation and c.algo and c.eval.variants else "finished"

    def evaluation_due(self, step: int) -> bool:
        c = self.config
        due = step >= c.steps or (c.eval.every and step % c.eval.every == 0)
        return bool(c.algo and c.eval.variants and due)

    def evaluated_variants(self, step: int) -> set[str]:
        return {r.get("variant") for r in self.metrics.rows() if r["phase"] == "eval" and r["step"] == step}

    def evaluate_at(self, state, step: int, done: set[str] = frozenset()) -> bool:
        """Evaluate the variants due at `step` (but those in `done`) and save its snapshot; with deferred
        evaluation only the snapshot, which the later evaluation reads."""
        c = self.config
        snapshot = snapshot_dir(self.dir, step)
        keep_snapshot = c.eval.snapshots or self.defer_evaluation
        todo = [] if self.defer_evaluation else [v for v in c.eval.variants if v not in done]
        if not self.evaluation_due(step) or not (todo or (keep_snapshot and not snapshot.exists())):
            return False
        if todo:
            policy, guidance = self.current_artifacts(state)
            self._evaluate(policy, guidance, step, todo, lambda where: self.save_artifacts(state, where, step))
        if keep_snapshot:
            self.save_artifacts(state, snapshot, step)
        return True

    def _evaluate(self, policy: Artifact, guidance: Artifact | None, step: int, variants: list[str],
                  save_best: Callable[[Path], None]) -> None:
        """Evaluate `variants` of the policy of `step`, a metrics row each; `save_best(dir)` writes its
        artifacts when the first variant scores best so far."""
        c = self.config
        selector, episodes = self._eval_setting(step >= c.steps)
        for variant in variants:
            agent = self._variant_agent(variant, policy, guidance, selector)
            t0 = time.perf_counter()
            result = evaluate_agent(agent, self.dataset.env, episodes, seed=EVAL_ENV_SEED,
                                    max_steps=c.eval.max_steps)
            scores = normalized_score(result.returns, self.dataset.env, self.reference, self.dataset.attrs)
            self.record({"phase": "eval", "step": step, "variant": variant, "candidates": agent.selector.candidates,
                                 "returns": to_list(result.returns),
                                 "scores": to_list(scores), "reference": self.reference,
                                 "wall_s": time.perf_counter() - t0, "sim_s": result.sim_seconds,
                                 "policy_s": result.policy_seconds, "eval_s": result.total_seconds})
            self.log(f"step {step} {variant}: normalized score {np.mean(scores):.1f} "
                     f"(per seed {np.round(np.mean(scores, 1), 1).tolist()}, reference {self.reference})")
            if variant == c.eval.variants[0]:
                self._keep_if_best(step, float(np.mean(scores)), save_best)

    def _evaluate_trained(self, trained: dict) -> dict:
        """Finish a run trained with deferred evaluation: each evaluation step's pending variants from its
        snapshot, in step order (resumable: recorded variants are skipped), then the summary, which keeps
        the training machine's time per step and peak memory."""
        c = self.config
        self._replay_value_check()
        trained_steps = {r["step"] for r in self.metrics.rows() if r["phase"] == "train"}
        steps = sorted(s for s in trained_steps if self.evaluation_due(s))
        last = self._snapshot_artifacts(steps[-1]) if steps else None
        if last:
            self._check_evaluation_memory(*last)
        for step in steps:
            todo = [v for v in c.eval.variants if v not in self.evaluated_variants(step)]
            if todo:
                snapshot = snapshot_dir(self.dir, step)
                artifacts = last if step == steps[-1] else self._snapshot_artifacts(step)
                self._evaluate(*artifacts, step, todo, lambda where, snapshot=snapshot: _copy_artifacts(snapshot, where))
        if not c.eval.snapshots:
            shutil.rmtree(self.dir / "snapshots", ignore_errors=True)
        summary = {**trained, **self.summary(trained.get("seconds_per_step"), trained.get("peak_memory_bytes")),
                   "evaluated_later": True}
        write_json_atomic(self.dir / "summary.json", summary)
        return summary

    def _snapshot_artifacts(self, step: int) -> tuple[Artifact, Artifact | None]:
        """(policy, guidance) of an evaluation step from its snapshot; a frozen guidance is the run's own."""
        snapshot = snapshot_dir(self.dir, step)
        if not (snapshot / "policy" / "meta.json").exists():
            raise MDPTError(f"{self.dir}: trained without evaluation, but its snapshot of step {step} is missing "
                            f"({snapshot}); copy the whole run directory from the training machine")
        guidance = snapshot / "guidance"
        return load_policy(snapshot / "policy"), load_guidance(guidance) if guidance.exists() else self.frozen_guidance

    def _keep_if_best(self, step: int, mean: float, save: Callable[[Path], None]) -> None:
        """The artifacts of the best evaluation so far, kept in best/ (the summary's `best`)."""
        best_file = self.dir / "best" / "best.json"
        try:
            best = read_json(best_file, "best record") if best_file.exists() else None
        except MDPTError:
            best = None
        if isinstance(best, dict) and isinstance(best.get("mean"), int | float) and best["mean"] >= mean:
            return
        save(self.dir / "best")
        write_json_atomic(best_file, {"step": step, "mean": mean, "variant": self.config.eval.variants[0]})

    def _variant_agent(self, variant: str, policy: Artifact, guidance: Artifact | None, selector) -> Agent:
        """One Agent per variant and candidate count for the whole run: later evaluations swap in the
        current parameters and reuse its compiled function (the random guidance keeps its fixed
        random parameters)."""
        c = self.config
        key = (variant, selector.candidates)
        if key not in self._agents:
            self._agents[key] = variant_agent(variant, policy, guidance, selector, c.allow_data_mismatch)
            return self._agents[key]
        guidance_params = guidance.params if variant == "guided" and guidance is not None else None
        return self._agents[key].with_params(policy.params, guidance_params)


def _copy_artifacts(src: Path, dst: Path) -> None:
    """The artifact folders of `src` (a snapshot) into `dst`, each replaced whole."""
    for kind in ("policy", "guidance"):
        if (src / kind).exists():
            with atomic_dir(dst / kind) as tmp:
                shutil.copytree(src / kind, tmp, dirs_exist_ok=True)

