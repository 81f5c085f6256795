"""A training run in a directory: config, metrics, checkpoints, artifacts, summary; resumable.

run_dir/
  config.json        the resolved RunConfig (+ versions)
  metrics.jsonl      one row per chunk ("train") and per evaluation ("eval")
  checkpoints/       exact training state (see training/checkpoint.py)
  policy/, guidance/ artifacts (safetensors + meta.json)
  best/              the artifacts of the best evaluation the summary reports
  guidance-run/      guidance-first without a given guidance: the guidance trained first
  summary.json       last-iterate, best and offline-selected scores, value check, cost, preset
  .lock              held while a process works in the directory
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from mdpt import presets
from mdpt.agent import Agent
from mdpt.artifacts import Artifact, dataset_record, load_guidance, load_policy, save_artifact
from mdpt.data.batches import device_arrays
from mdpt.data.normalizer import Normalizer
from mdpt.data.registry import normalized_score
from mdpt.errors import MDPTError, RunStopped
from mdpt.evaluation.api import check_agent, evaluate_agent, variant_agent
from mdpt.experiments.config import RunConfig
from mdpt.experiments.rundir import (
    RUN_ENTRIES,
    MetricsLog,
    RunLock,
    check_writable,
    claim_folder,
    remove_empty,
    remove_stale_temporaries,
    undo_claim,
)
from mdpt.experiments.sinks import Sinks
from mdpt.guidance.module import GuidanceModule
from mdpt.io import atomic_dir, read_json, versions, write_json_atomic
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from mdpt.training.profiling import check_memory, out_of_memory_as_error
from mdpt.training.trainer import Trainer

# what to lower when a training step does not fit in memory
TRAIN_LOWER = "batch_size, seeds, the network widths (policy.hidden, guidance.hidden) or policy.T"


LOG = logging.getLogger("mdpt")


def _to_list(x):
    return np.asarray(x).tolist()


class ValueCheck:
    """|Q| of a trained critic against max |r| / (1 - gamma): a critic past the bound (times a
    margin) for `patience` chunks in a row while still growing is diverging."""

    def __init__(self, bound: float, margin: float, patience: int):
        self.bound, self.limit, self.patience = bound, bound * margin, patience
        self.first_exceeded: int | None = None
        self.max_abs_q = 0.0
        self._streak, self._last = 0, None

    def observe(self, step: int, abs_q_max: float) -> str | None:
        """'ok', 'warn' (past the limit) or 'stop' (past it and growing for `patience` chunks)."""
        self.max_abs_q = max(self.max_abs_q, abs_q_max)
        if abs_q_max <= self.limit:
            self._streak, self._last = 0, abs_q_max
            return "ok"
        if self.first_exceeded is None:
            self.first_exceeded = step
        growing = self._last is None or abs_q_max > self._last
        self._streak = self._streak + 1 if growing else self._streak
        self._last = abs_q_max
        return "stop" if self._streak >= self.patience else "warn"

    def record(self) -> dict:
        return {"bound": self.bound, "limit": self.limit, "max_abs_q": self.max_abs_q,
                "first_exceeded_step": self.first_exceeded, "within_bound": self.first_exceeded is None}


class Run:
    """One run in its directory. `defer_evaluation`: train without evaluating (a machine without the
    simulator, e.g. a GPU box): each evaluation step's artifacts are kept in snapshots/step-N/ and the
    summary says `status: trained`; a later `execute()` without the flag, on a machine with the
    simulator, evaluates those snapshots as the evaluations along training would have, then finishes."""

    def __init__(self, run_dir: str | os.PathLike, config: RunConfig, resume: bool = False,
                 progress: bool = True, log=None, dataset=None, defer_evaluation: bool = False):
        self.dir = Path(run_dir)
        self.config = config.validate()
        self.resume = resume
        self.defer_evaluation = defer_evaluation
        self.progress = progress
        self.log = log or LOG.info
        self.warn = log or LOG.warning
        self._dataset = dataset
        self.metrics = MetricsLog(self.dir / "metrics.jsonl")
        self._agents: dict[tuple, Agent] = {}  # evaluation agents by (variant, candidates), built once
        self.warnings: list[str] = []
        self.value_check: ValueCheck | None = None
        self.sinks: Sinks | None = None

    # ----- set-up -----
    def _check_dir(self) -> None:
        check_writable(self.dir)
        existing = self.dir / "config.json"
        if existing.exists():
            if not self.resume:
                raise MDPTError(f"{self.dir}: already holds a run; pass --resume to continue it or choose another --out")
            if not self._same_config(read_json(existing, "run config")):
                raise MDPTError(f"{self.dir}: --resume with a different config than the run was started with "
                                "(or one written by another mdpt version); start a new --out")

    def continues(self) -> bool:
        """Whether the run directory holds nothing yet or this run (what `resume` accepts)."""
        existing = self.dir / "config.json"
        return not existing.exists() or self._same_config(read_json(existing, "run config"))

    def claim_dir(self) -> None:
        """config.json, written once the run is through its checks (data, guidance, memory): a run refused
        before leaves nothing that would make the same command, or the one with a smaller batch the
        refusal suggests, ask for --resume."""
        write_json_atomic(self.dir / "config.json", {**self.config.to_json(), "versions": versions()})

    def _same_config(self, old) -> bool:
        """The stored config means this run: equal, or equal once settings added since it was
        written take their defaults (a stored value is never overridden)."""
        if not isinstance(old, dict):
            return False
        old = {k: v for k, v in old.items() if k != "versions"}
        if old == self.config.to_json():
            return True
        try:
            return RunConfig.from_dict({k: v for k, v in old.items() if k != "preset"}).to_json() == self.config.to_json()
        except MDPTError:
            return False

    def _load_data(self):
        if self._dataset is None:
            from mdpt.data.load import load_dataset

            self._dataset = load_dataset(self.config.dataset, env=self.config.env)
        return self._dataset

    def _stage1_config(self) -> RunConfig:
        c = self.config
        d = {"dataset": c.dataset, "env": c.env, "guidance": c.guidance.to_json(),
             "steps": c.stage1.guidance_steps or c.steps, "seeds": c.seeds, "seed": c.seed,
             "batch_size": c.batch_size, "chunk": c.chunk, "divergence": c.to_json()["divergence"],
             "stage1": {"next_actions": c.stage1.next_actions}}
        return RunConfig.from_dict(d)

    def _frozen_guidance(self, data) -> Artifact | None:
        c = self.config
        if c.algo is None or c.mode != "guidance-first":
            return None
        if c.stage1.guidance_path == "random":
            art = self._random_guidance(data)
        elif c.stage1.guidance_path:
            art = load_guidance(c.stage1.guidance_path, c.stage1.guidance_seed)
        else:  # guidance-first with no module given: train one first, in this run directory
            sub = self._stage1_config()
            self.log(f"guidance-first: training {sub.guidance_kind} guidance ({sub.steps} steps) first")
            Run(self.dir / "guidance-run", sub, resume=True, progress=self.progress, log=self.log,
                dataset=data).execute()
            art = load_guidance(self.dir / "guidance-run" / "guidance")
        if (art.module.obs_dim, art.module.act_dim) != (data.obs_dim, data.act_dim):
            raise MDPTError(f"guidance {art.path} has obs/act sizes {art.module.obs_dim}/{art.module.act_dim}, "
                            f"the dataset {data.obs_dim}/{data.act_dim}")
        if art.fingerprint != data.fingerprint and not c.allow_data_mismatch:
            raise MDPTError(f"guidance {art.path} was trained on data {art.fingerprint}, this dataset is "
                            f"{data.fingerprint}; pass --allow-data-mismatch to use it anyway")
        if art.num_seeds not in (1, c.seeds):
            raise MDPTError(f"guidance {art.path} holds {art.num_seeds} seeds; train with --seeds {art.num_seeds}, "
                            "or pick one with --guidance-seed")
        return art

    def _random_guidance(self, data) -> Artifact:
        """The necessity control: an untrained guidance (one per seed), saved in RUN/random-guidance
        so that evaluation scores with the same random critic the policy trained against."""
        c = self.config
        where = self.dir / "random-guidance" / "guidance"
        if not (where / "meta.json").exists():
            module = GuidanceModule(c.guidance_config(), data.obs_dim, data.act_dim, c.steps)
            keys = jax.random.split(jax.random.PRNGKey(30_000 + c.seed), c.seeds)
            params = jax.vmap(lambda k: GuidanceModule.saved_params(module.init(k)))(keys)
            save_artifact(where, "guidance", module, params, Normalizer.fit(data), dataset_record(data), c.seed_list, 0,
                          {"mode": "untrained", "note": "random (untrained) guidance: the necessity control",
                           "selection": {"selector": c.selector.selector, "beta": c.selector.beta}})
        return load_guidance(where)

    def build(self):
        c = self.config
        data = self._load_data()
        self.dataset = data
        self.normalizer = Normalizer.fit(data)
        self.arrays = device_arrays(data, self.normalizer)
        self.frozen_guidance = self._frozen_guidance(data)
        note = presets.task_note(c.algo, c.guidance_kind, c.dataset)
        if note:
            self.log(f"note: {note}")
        self.trainer = self._make_trainer(unfrozen=False)
        if self.trainer.guidance_role == "train" and c.divergence.action != "off":
            bound = float(np.abs(np.asarray(self.arrays["rew"])).max()) / (1.0 - self.trainer.guidance.config.discount)
            self.value_check = ValueCheck(bound, c.divergence.margin, c.divergence.patience)
        self._agents = {}
        return self

    def _make_trainer(self, unfrozen: bool) -> Trainer:
        """The trainer of this run; `unfrozen`: a guidance-first run past `stage1.unfreeze_at`."""
        c = self.config
        data = self.dataset
        policy = DiffusionPolicy(c.policy_config(), data.obs_dim, data.act_dim, c.steps) if c.algo else None
        frozen, g_role, p_role = {}, "train", "train" if c.algo else None
        if self.frozen_guidance is not None:
            guidance = self.frozen_guidance.module
            if unfrozen:
                guidance = GuidanceModule(self.frozen_guidance.module.config, data.obs_dim, data.act_dim, c.steps)
            else:
                g_role = "frozen"
                # training reads the online critic (and V); the target travels only for selection
                frozen["guidance"] = {k: v for k, v in self.frozen_guidance.params.items() if k != "target_q"}
                g_norm = self.frozen_guidance.normalizer
                if not g_norm.same_as(self.normalizer):  # map our normalized states into the guidance's
                    scale = self.normalizer.obs_std / g_norm.obs_std
                    shift = (self.normalizer.obs_mean - g_norm.obs_mean) / g_norm.obs_std
                    frozen["guidance_obs"] = (scale[None], shift[None])
        else:
            guidance = GuidanceModule(c.guidance_config(), data.obs_dim, data.act_dim, c.steps)
        if c.algo is None and guidance.needs_next_actions:
            policy, p_role = self._next_action_policy(frozen)
        return Trainer(self.arrays, policy, guidance, p_role, g_role, c.batch_size, frozen)

    def _next_action_policy(self, frozen: dict):
        """A dql-critic trained alone takes next actions from: a given policy (frozen), an untrained
        actor (frozen at its initialization: the paper's script), or a BC policy trained alongside."""
        c, data = self.config, self.dataset
        source = c.stage1.next_actions
        if source == "bc":  # IDQL-style BC sampler: it only supplies next actions
            return DiffusionPolicy(PolicyConfig(algo="idql", net="mlp"), data.obs_dim, data.act_dim, c.steps), "train"
        if source == "untrained":
            policy = DiffusionPolicy(PolicyConfig(algo="dql"), data.obs_dim, data.act_dim, c.steps)
            keys = jax.random.split(jax.random.PRNGKey(20_000 + c.seed), c.seeds)
            frozen["policy"] = jax.vmap(lambda k: policy.init(k)["params"])(keys)
            return policy, "frozen"
        art = load_policy(source)
        frozen["policy"] = art.params
        return art.module, "frozen"

    def _unfreeze(self, state):
        """Past stage1.unfreeze_at: the frozen guidance joins the training state and trains on."""
        c = self.config
        if self.frozen_guidance is None or c.stage1.unfreeze_at is None or self.trainer.guidance_role == "train":
            return state
        if "guidance_obs" in self.trainer.frozen:
            raise MDPTError("stage1.unfreeze_at: the frozen guidance was trained with other state statistics; "
                            "unfreezing it is supported for guidance trained on this dataset only")
        self.trainer = self._make_trainer(unfrozen=True)
        params = self.frozen_guidance.params
        if self.frozen_guidance.num_seeds != c.seeds:
            params = jax.tree.map(lambda x: np.repeat(np.asarray(x), c.seeds, axis=0), params)
        state = {**state, "guidance": jax.vmap(self.trainer.guidance.init_from)(params)}
        if c.divergence.action != "off":
            bound = float(np.abs(np.asarray(self.arrays["rew"])).max()) / (1.0 - self.trainer.guidance.config.discount)
            self.value_check = ValueCheck(bound, c.divergence.margin, c.divergence.patience)
        self._agents = {}
        return state

    # ----- the loop -----
    def execute(self) -> dict:
        created = claim_folder(self.dir, RUN_ENTRIES, "run directory")  # before anything is written or cleaned
        try:
            check_writable(self.dir)  # creates the directory; one-line error if it cannot be written
            with RunLock(self.dir), out_of_memory_as_error(f"the run in {self.dir}", TRAIN_LOWER):
                try:
                    self._check_dir()
                    remove_stale_temporaries(self.dir)  # only under the lock: another process's are live
                    self.build()
                    self.sinks = Sinks(self.dir, self.config.log.backends, self.config.log.wandb_project,
                                       self.config.to_json())
                    try:
                        return self._train()
                    finally:
                        self.sinks.close()
                except BaseException:
                    if not (self.dir / "config.json").exists():  # refused before it claimed the directory
                        undo_claim(self.dir)
                    raise
        except BaseException:
            remove_empty(created)
            raise

    def record(self, row: dict) -> None:
        """A metrics row: metrics.jsonl first (the source of truth), then the optional sinks."""
        self.metrics.append(row)
        if self.sinks is not None:
            self.sinks.write(row)

    def check_training_memory(self, state, steps: int) -> None:
        """Refuse (one line, both numbers) a training step that cannot fit in memory, before it
        runs: its chunk of `steps` is compiled and XLA's memory analysis compared with the memory
        available (`profiling.check_memory`); training then runs that executable."""
        c = self.config
        what = f"the training step ({c.seeds} seeds x batch {c.batch_size})"
        check_memory(self.trainer.compiled(state, steps), what, TRAIN_LOWER)

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

    def _initial_state(self):
        """Fresh state, or the checkpoint's (in the trainer shape of its step)."""
        c = self.config
        ckpt = self.dir / "checkpoints"
        index = read_json(ckpt / "checkpoint.json", "checkpoint index") if (ckpt / "checkpoint.json").exists() else None
        state = self.trainer.init(c.seed_list)
        if isinstance(index, dict) and c.stage1.unfreeze_at is not None and isinstance(index.get("step"), int) \
                and index["step"] >= c.stage1.unfreeze_at:
            state = self._unfreeze(state)
        restored = load_checkpoint(ckpt, state)
        if restored is None:
            return state, 0
        state, index = restored
        prune_checkpoints(ckpt, keep=index["file"])
        self.log(f"resuming {self.dir} from step {index['step']}")
        return state, index["step"]

    def _chunk_length(self, step: int) -> int:
        c = self.config
        n = min(c.chunk, c.steps - step)
        if c.stage1.unfreeze_at is not None and step < c.stage1.unfreeze_at:
            n = min(n, c.stage1.unfreeze_at - step)
        return n

    def trained_summary(self) -> dict | None:
        """The summary of a run trained with deferred evaluation, while this process can evaluate it."""
        summary = None if self.defer_evaluation else self.saved_summary()
        return summary if summary is not None and summary.get("status") == "trained" else None

    def saved_summary(self) -> dict | None:
        """summary.json; None when there is none, or when it is damaged (e.g. truncated by a copy): the run
        then writes it again from its last checkpoint and its metrics, as a run killed before writing it."""
        path = self.dir / "summary.json"
        if not path.exists():
            return None
        try:
            summary = read_json(path, "run summary")
        except MDPTError:
            summary = None
        if not isinstance(summary, dict):
            self.warn(f"{path}: damaged (not the object a run writes); writing it again from the run's last "
                      "checkpoint and metrics")
            return None
        return summary

    def _train(self) -> dict:
        c = self.config
        if (trained := self.trained_summary()) is not None:
            return self._evaluate_trained(trained)
        state, step = self._initial_state()
        self.metrics.truncate_after(step)
        self._replay_value_check()
        if step >= c.steps and (summary := self.saved_summary()) is not None:
            return summary
        if step < c.steps:  # (killed after its last checkpoint: only the artifacts and summary are left to write)
            if not self.defer_evaluation:
                self.check_evaluation_memory(state)  # the cheaper program to compile first
            self.check_training_memory(state, self._chunk_length(step))
        self.claim_dir()
        if step > 0:  # a kill during an evaluation (its checkpoint comes first): only its missing variants
            self._maybe_evaluate(state, step, done=self._evaluated_variants(step))
        bar = _progress(c.steps, step, self.progress, str(self.dir.name))
        timed_steps, timed_seconds, first = 0, 0.0, True
        while step < c.steps:
            n = self._chunk_length(step)
            if c.stage1.unfreeze_at is not None and step >= c.stage1.unfreeze_at:
                trainer = self.trainer
                state = self._unfreeze(state)
                if self.trainer is not trainer:  # the guidance joins the training state: a bigger step
                    self.check_training_memory(state, n)
            t0 = time.perf_counter()
            state, m = self.trainer.run(state, n, start=step)
            jax.block_until_ready(state)
            dt = time.perf_counter() - t0
            if not first:
                timed_steps, timed_seconds = timed_steps + n, timed_seconds + dt
            first = False
            self._check_finite(m, step)
            step += n
            self.record({"phase": "train", "step": step, "wall_s": dt, **recorded_metrics(m)})
            values_ok = self._check_values(m, step)
            due = self._evaluation_due(step)
            if values_ok and (due or step >= c.steps or (c.checkpoint_every and step % c.checkpoint_every < n)):
                self._check_finite_state(state, step)
                save_checkpoint(self.dir / "checkpoints", state, step)
            if due:  # after the checkpoint: a kill during a long evaluation does not cost the training again
                self._maybe_evaluate(state, step)
            if bar:
                bar.update(n)
        if bar:
            bar.close()
        self.state = state
        return self._finish(state, timed_seconds / timed_steps if timed_steps else self._logged_seconds_per_step())

    def _replay_value_check(self) -> None:
        """A resumed run's value check continues from the values its kept metrics rows recorded."""
        if self.value_check is None:
            return
        for r in self.metrics.rows():
            if r["phase"] == "train" and (q := _q_abs_max(r)) is not None:
                self.value_check.observe(r["step"], q)

    def _logged_seconds_per_step(self) -> float | None:
        """Seconds per step from the metrics log (a run resumed with nothing left to train); the
        first chunk, which compiled, is left out."""
        rows = [r for r in self.metrics.rows() if r["phase"] == "train"]
        steps = [b["step"] - a["step"] for a, b in zip(rows, rows[1:], strict=False)]
        return sum(r["wall_s"] for r in rows[1:]) / sum(steps) if steps and sum(steps) > 0 else None

    def _check_values(self, m: dict, step: int) -> bool:
        """The value check. With divergence.action 'stop': False while the critic is past its bound
        (no checkpoint is written then, so the kept one is the last good one), and a RunStopped
        when it keeps growing; 'warn' only logs and records."""
        q = _q_abs_max(m)
        if self.value_check is None or q is None:
            return True
        verdict = self.value_check.observe(step, q)
        if verdict == "ok":
            return True
        vc = self.value_check
        message = (f"critic |Q| reached {q:.3g} at step {step}, past its bound {vc.bound:.3g} = max |r| / (1 - gamma) "
                   f"(x{self.config.divergence.margin:g})")
        if vc.first_exceeded == step or verdict == "stop":
            self.warn(f"warning: {message}")
            self.warnings.append(message)
        if verdict == "stop" and self.config.divergence.action == "stop":
            self._write_stopped_summary("diverged", message)
            raise RunStopped(f"{message}, still growing: the critic is diverging; training stopped: "
                             f"{self._kept_checkpoint()} (fixes: guidance.layer_norm=true, guidance.grad_clip, a "
                             "lower lr; or divergence.action=warn to train on)")
        return self.config.divergence.action != "stop"

    def _write_stopped_summary(self, status: str, message: str) -> None:
        write_json_atomic(self.dir / "summary.json", {**self._summary(None, None), "status": status, "stopped": message})

    def _check_finite(self, m: dict, step: int) -> None:
        bad = np.asarray(m["nonfinite_at"])
        if (bad >= 0).any():
            seed = int(np.argmax(bad >= 0))
            at = step + int(bad[seed]) + 1
            bad_keys = [k for k, v in m.items() if "@" not in k and k != "nonfinite_at"
                        and not np.isfinite(np.asarray(v)[seed])]
            bad_keys.sort(key=lambda k: "loss" not in k)  # a loss names the fault best
            name = bad_keys[0] if bad_keys else "loss"
            value = float(np.asarray(m[name])[seed]) if bad_keys else float("nan")
            raise RunStopped(f"non-finite {name} ({value}) at step {at} (seed {self.config.seed_list[seed]}); "
                             f"training stopped: {self._kept_checkpoint()}")

    def _check_finite_state(self, state, step: int) -> None:
        """Never checkpoint parameters that went non-finite even though every loss was finite."""
        for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state)):
            x = np.asarray(leaf)
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                raise RunStopped(f"non-finite values in {jax.tree_util.keystr(path)} after step {step}; "
                                 f"training stopped: {self._kept_checkpoint()}")

    def _kept_checkpoint(self) -> str:
        ckpt = self.dir / "checkpoints" / "checkpoint.json"
        if not ckpt.exists():
            return "no checkpoint had been written yet (lower the learning rate or check the data)"
        try:
            kept = read_json(ckpt, "checkpoint index")["step"]
        except (MDPTError, KeyError, TypeError):
            kept = "?"
        return f"the last good checkpoint (step {kept}) is kept in {ckpt.parent}"

    # ----- evaluation -----
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

    def _evaluation_due(self, step: int) -> bool:
        c = self.config
        due = step >= c.steps or (c.eval.every and step % c.eval.every == 0)
        return bool(c.algo and c.eval.variants and due)

    def _evaluated_variants(self, step: int) -> set[str]:
        return {r.get("variant") for r in self.metrics.rows() if r["phase"] == "eval" and r["step"] == step}

    def _snapshot_dir(self, step: int) -> Path:
        return self.dir / "snapshots" / f"step-{step:09d}"

    def _maybe_evaluate(self, state, step: int, done: set[str] = frozenset()) -> bool:
        """Evaluate the variants due at `step` (but those in `done`) and save its snapshot; with deferred
        evaluation only the snapshot, which the later evaluation reads."""
        c = self.config
        snapshot = self._snapshot_dir(step)
        keep_snapshot = c.eval.snapshots or self.defer_evaluation
        todo = [] if self.defer_evaluation else [v for v in c.eval.variants if v not in done]
        if not self._evaluation_due(step) or not (todo or (keep_snapshot and not snapshot.exists())):
            return False
        if todo:
            policy, guidance = self.current_artifacts(state)
            self._evaluate(policy, guidance, step, todo, lambda where: self._save_artifacts(state, where, step))
        if keep_snapshot:
            self._save_artifacts(state, snapshot, step)
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
            result = evaluate_agent(agent, self.dataset.env, episodes, seed=1000 + c.seed,
                                    max_steps=c.eval.max_steps)
            scores = normalized_score(result.returns, self.dataset.env, c.eval.reference, self.dataset.attrs)
            self.record({"phase": "eval", "step": step, "variant": variant, "candidates": agent.selector.candidates,
                                 "returns": _to_list(result.returns),
                                 "scores": _to_list(scores), "reference": c.eval.reference,
                                 "wall_s": time.perf_counter() - t0, "sim_s": result.sim_seconds,
                                 "policy_s": result.policy_seconds, "eval_s": result.total_seconds})
            self.log(f"step {step} {variant}: normalized score {np.mean(scores):.1f} "
                     f"(per seed {np.round(np.mean(scores, 1), 1).tolist()}, reference {c.eval.reference})")
            if variant == c.eval.variants[0]:
                self._keep_if_best(step, float(np.mean(scores)), save_best)

    def _evaluate_trained(self, trained: dict) -> dict:
        """Finish a run trained with deferred evaluation: each evaluation step's pending variants from its
        snapshot, in step order (resumable: recorded variants are skipped), then the summary, which keeps
        the training machine's time per step and peak memory."""
        c = self.config
        self._replay_value_check()
        trained_steps = {r["step"] for r in self.metrics.rows() if r["phase"] == "train"}
        steps = sorted(s for s in trained_steps if self._evaluation_due(s))
        last = self._snapshot_artifacts(steps[-1]) if steps else None
        if last:
            self._check_evaluation_memory(*last)
        for step in steps:
            todo = [v for v in c.eval.variants if v not in self._evaluated_variants(step)]
            if todo:
                snapshot = self._snapshot_dir(step)
                artifacts = last if step == steps[-1] else self._snapshot_artifacts(step)
                self._evaluate(*artifacts, step, todo, lambda where, snapshot=snapshot: _copy_artifacts(snapshot, where))
        if not c.eval.snapshots:
            shutil.rmtree(self.dir / "snapshots", ignore_errors=True)
        summary = {**trained, **self._summary(trained.get("seconds_per_step"), trained.get("peak_memory_bytes")),
                   "evaluated_later": True}
        write_json_atomic(self.dir / "summary.json", summary)
        return summary

    def _snapshot_artifacts(self, step: int) -> tuple[Artifact, Artifact | None]:
        """(policy, guidance) of an evaluation step from its snapshot; a frozen guidance is the run's own."""
        snapshot = self._snapshot_dir(step)
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
            self._agents[key] = variant_agent(variant, policy, guidance, selector, c.allow_data_mismatch, c.seed)
            return self._agents[key]
        guidance_params = guidance.params if variant == "guided" and guidance is not None else None
        return self._agents[key].with_params(policy.params, guidance_params)

    # ----- the end -----
    def _save_artifacts(self, state, where: Path, step: int) -> None:
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

    def _finish(self, state, seconds_per_step) -> dict:
        self._save_artifacts(state, self.dir, self.config.steps)
        summary = {**self._summary(seconds_per_step), "status": self.trained_status()}
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

    def _summary(self, seconds_per_step, peak_memory: int | None | str = "measure") -> dict:
        c = self.config
        evals = [r for r in self.metrics.rows() if r["phase"] == "eval"]
        final, best, selected = {}, {}, {}
        for r in evals:
            v = r["variant"]
            final[v] = {"step": r["step"], "scores": r["scores"], "mean": float(np.mean(r["scores"]))}
            if v not in best or np.mean(r["scores"]) > best[v]["mean"]:
                best[v] = final[v]
        for v in final:
            picked = self._selected_offline(evals, v)
            if picked:
                selected[v] = picked
        kind = self.frozen_guidance.module.kind if self.frozen_guidance else self.trainer.guidance.kind
        return {
            "name": self.dir.name, "status": "finished", "algo": c.algo, "mode": c.mode if c.algo else "guidance-only",
            "guidance_kind": kind, "dataset": c.dataset, "dataset_fingerprint": self.dataset.fingerprint,
            "reference": c.eval.reference, "seeds": c.seed_list, "steps": c.steps,
            "final": final, "best": best, "selected_offline": selected, "model_selection": c.eval.model_selection,
            "preset": {"layers": list(c.preset), "selector": c.selector.describe(),
                       "note": presets.task_note(c.algo, c.guidance_kind, c.dataset)},
            "episodes": c.eval.final_episodes or c.eval.episodes, "value_check": self.value_check.record() if self.value_check else None,
            "warnings": self.warnings[:20],
            "seconds_per_step": seconds_per_step,
            "peak_memory_bytes": self.peak_memory_bytes() if peak_memory == "measure" else peak_memory,
            "dataset_mean_score": float(np.mean(normalized_score(self.dataset.episode_returns, self.dataset.env,
                                                                 c.eval.reference, self.dataset.attrs))),
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


def _copy_artifacts(src: Path, dst: Path) -> None:
    """The artifact folders of `src` (a snapshot) into `dst`, each replaced whole."""
    for kind in ("policy", "guidance"):
        if (src / kind).exists():
            with atomic_dir(dst / kind) as tmp:
                shutil.copytree(src / kind, tmp, dirs_exist_ok=True)


def recorded_metrics(m: dict) -> dict:
    """A chunk's metrics as its metrics.jsonl row keeps them (lists per seed; no per-step '@' series)."""
    return {k: _to_list(v) for k, v in m.items() if "@" not in k and k != "nonfinite_at"}


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=2.0)


def _q_abs_max(row: dict) -> float | None:
    """The largest |Q| over seeds in a train metrics row (None: no critic trains)."""
    return float(np.max(np.asarray(row["guidance/q_abs_max"]))) if "guidance/q_abs_max" in row else None
