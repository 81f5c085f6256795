"""A run's results (`RunResults`, a part of `runner.Run`): its artifacts, summary.json (last-iterate,
best and offline-selected scores, the value check, cost, preset) and the peak memory of its program."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mdpt import presets
from mdpt.artifacts import dataset_record, save_artifact
from mdpt.data.load import preset_dataset
from mdpt.data.registry import available_reference, normalized_score, reference_bounds
from mdpt.guidance.module import GuidanceModule
from mdpt.io import write_json_atomic


class RunResults:
    """The results half of `Run`."""

    def save_artifacts(self, state, where: Path, step: int) -> None:
        c = self.config
        rec = dataset_record(self.dataset)
        meta = self._meta()
        common = {"mode": c.mode if c.algo else "guidance-only", "run_dir": str(self.dir), "preset": list(c.preset),
                  "selection": meta["selection"]}
        if self.trainer.guidance_role == "train":
            extra = {**common}
            if self.trainer.guidance.needs_next_actions:
                extra["next_action_source"] = "joint policy" if c.algo else {
                    "bc": "behaviour-cloned diffusion policy", "untrained": "untrained actor (frozen target)"
                }.get(c.stage1.next_actions, c.stage1.next_actions)
            save_artifact(where / "guidance", "guidance", self.trainer.guidance,
                          GuidanceModule.saved_params(state["guidance"]), self.normalizer, rec, c.seed_list, step, extra)
        if c.algo:
            extra = {**common, "sampling": meta["sampling"]}
            if self.frozen_guidance is not None:
                extra["trained_with_guidance"] = {"path": str(Path(self.frozen_guidance.path).resolve()),
                                                  "kind": self.frozen_guidance.module.kind,
                                                  "fingerprint": self.frozen_guidance.fingerprint,
                                                  "mismatch_override": self.frozen_guidance.fingerprint != rec["fingerprint"],
                                                  "unfrozen_at": c.stage1.unfreeze_at}
            else:
                extra["trained_with_guidance"] = {"path": str((self.dir / "guidance").resolve()),
                                                  "kind": self.trainer.guidance.kind}
            save_artifact(where / "policy", "policy", self.trainer.policy, state["policy"]["ema"],
                          self.normalizer, rec, c.seed_list, step, extra)

    def finish(self, state, seconds_per_step, peak_memory: int | None | str = "measure", **extra) -> dict:
        """The final artifacts and summary.json (with `extra` keys, e.g. a group's) of a trained run."""
        self.save_artifacts(state, self.dir, self.config.steps)
        summary = {**self.summary(seconds_per_step, peak_memory), "status": self.trained_status(), **extra}
        write_json_atomic(self.dir / "summary.json", summary)
        return summary

    def _selected_offline(self, evals: list[dict], variant: str) -> dict | None:
        """Diffusion-QL's offline model selection: per seed, the evaluation whose preceding chunk had
        the lowest BC loss (no environment returns used to choose)."""
        bc = {r["step"]: np.asarray(r["policy/bc_loss"]) for r in self.metrics.rows()
              if r["phase"] == "train" and "policy/bc_loss" in r}
        rows = [r for r in evals if r["variant"] == variant and r["step"] in bc]
        if not rows:
            return None
        losses = np.stack([bc[r["step"]] for r in rows])  # (evals, seeds)
        pick = losses.argmin(0)
        scores = [rows[j]["scores"][i] for i, j in enumerate(pick)]
        seed_means = [float(np.mean(s)) for s in scores]  # seeds may differ in episodes (curve vs last evaluation)
        return {"steps": [rows[j]["step"] for j in pick], "scores": scores, "mean": float(np.mean(seed_means)),
                "rule": "per seed, the evaluation after the chunk with the lowest BC loss"}

    @property
    def reference(self) -> str:
        """The score reference used: eval.reference, or what stands in when the data lacks it (raw returns
        for data with no reference scores; `registry.available_reference`)."""
        return available_reference(self.dataset.env, self.config.eval.reference, self.dataset.attrs)

    def summary(self, seconds_per_step, peak_memory: int | None | str = "measure") -> dict:
        c = self.config
        evals = [r for r in self.metrics.rows() if r["phase"] == "eval"]
        final, best = final_and_best(evals)
        selected = {}
        for v in final:
            picked = self._selected_offline(evals, v)
            if picked:
                selected[v] = picked
        kind = self.frozen_guidance.module.kind if self.frozen_guidance else self.trainer.guidance.kind
        return {
            "name": self.dir.name, "status": "finished", "algo": c.algo, "mode": c.mode if c.algo else "guidance-only",
            "guidance_kind": kind, "dataset": c.dataset, "dataset_fingerprint": self.dataset.fingerprint,
            "reference": self.reference, "seeds": c.seed_list,
            "reference_bounds": (None if self.reference == "raw" else
                                 list(reference_bounds(self.dataset.env, self.reference, self.dataset.attrs))),
            "steps": c.steps,
            "final": final, "best": best, "selected_offline": selected, "model_selection": c.eval.model_selection,
            "preset": {"layers": list(c.preset), "selector": c.selector.describe(),
                       "note": presets.task_note(c.algo, c.guidance_kind, preset_dataset(c.dataset))},
            "episodes": c.eval.final_episodes or c.eval.episodes, "value_check": self.value_check.record() if self.value_check else None,
            "warnings": self.warnings[:20],
            "seconds_per_step": seconds_per_step,
            "peak_memory_bytes": self.peak_memory_bytes() if peak_memory == "measure" else peak_memory,
            "dataset_mean_score": float(np.mean(normalized_score(self.dataset.episode_returns, self.dataset.env,
                                                                 self.reference, self.dataset.attrs))),
        }

    def peak_memory_bytes(self) -> int | None:
        """Peak memory of the compiled training chunk (XLA memory analysis, on every backend) less the
        resident dataset, which every mode shares. The chunk was compiled for training already, so
        this normally costs no compilation."""
        try:
            state = jax.eval_shape(lambda: self.trainer.init(self.config.seed_list))
            compiled = self.trainer.compiled(state, min(self.config.chunk, self.config.steps))
            from mdpt.training.profiling import compiled_peak_bytes

            return compiled_peak_bytes(compiled) - self.trainer.dataset_bytes
        except Exception:  # analysis is best-effort; it never fails a run
            return None


def final_and_best(evals: list[dict]) -> tuple[dict, dict]:
    """({variant: last evaluation}, {variant: evaluation with the highest mean over seeds and
    episodes}) of evaluation rows in step order, each ``{"step", "scores", "mean"}``."""
    final, best = {}, {}
    for r in evals:
        v = r["variant"]
        final[v] = {"step": r["step"], "scores": r["scores"], "mean": float(np.mean(r["scores"]))}
        if v not in best or np.mean(r["scores"]) > best[v]["mean"]:
            best[v] = final[v]
    return final, best
