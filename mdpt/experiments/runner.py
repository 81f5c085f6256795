"""A training run in a directory: config, metrics, checkpoints, artifacts, summary; resumable. `Run` is
this file (set-up, resume, the chunk loop) with its evaluations (`run_evaluation.py`), its results
(`run_results.py`) and its per-chunk checks (`run_checks.py`).

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
import time
from pathlib import Path

import jax
import numpy as np

from mdpt import presets
from mdpt.agent import Agent
from mdpt.artifacts import Artifact, dataset_record, load_guidance, load_policy, save_artifact
from mdpt.data.batches import device_arrays
from mdpt.data.load import preset_dataset
from mdpt.data.normalizer import Normalizer
from mdpt.errors import MDPTError, RunStopped
from mdpt.experiments.config import RunConfig
from mdpt.experiments.run_checks import ValueCheck, q_abs_max, recorded_metrics, value_bound
from mdpt.experiments.run_evaluation import RunEvaluation
from mdpt.experiments.run_results import RunResults
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
from mdpt.io import read_json, versions, write_json_atomic
from mdpt.policies.module import DiffusionPolicy, PolicyConfig, make_policy
from mdpt.seeding import seed_keys
from mdpt.training.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from mdpt.training.profiling import check_memory, out_of_memory_as_error
from mdpt.training.trainer import Trainer

# what to lower when a training step does not fit in memory
TRAIN_LOWER = "batch_size, seeds, the network widths (policy.hidden, guidance.hidden) or policy.T"


LOG = logging.getLogger("mdpt")


class Run(RunEvaluation, RunResults):
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
    def check_dir(self) -> None:
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
            return _effective(RunConfig.from_dict({k: v for k, v in old.items() if k != "preset"})) == \
                _effective(self.config)
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
            keys = seed_keys(30_000, c.seed_list)
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
        note = presets.task_note(c.algo, c.guidance_kind, preset_dataset(c.dataset))
        if note:
            self.log(f"note: {note}")
        self.trainer = self._make_trainer(unfrozen=False)
        if self.trainer.guidance_role == "train" and c.divergence.action != "off":
            self.value_check = ValueCheck(value_bound(self.arrays["rew"], self.trainer.guidance.config.discount),
                                          c.divergence.margin, c.divergence.patience)
        self._agents = {}
        return self

    def _make_trainer(self, unfrozen: bool) -> Trainer:
        """The trainer of this run; `unfrozen`: a guidance-first run past `stage1.unfreeze_at`."""
        c = self.config
        data = self.dataset
        policy = make_policy(c.policy_config(), data.obs_dim, data.act_dim, c.steps) if c.algo else None
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
            keys = seed_keys(20_000, c.seed_list)
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
            self.value_check = ValueCheck(value_bound(self.arrays["rew"], self.trainer.guidance.config.discount),
                                          c.divergence.margin, c.divergence.patience)
        self._agents = {}
        return state

    # ----- the loop -----
    def execute(self) -> dict:
        created = claim_folder(self.dir, RUN_ENTRIES, "run directory")  # before anything is written or cleaned
        try:
            check_writable(self.dir)  # creates the directory; one-line error if it cannot be written
            with RunLock(self.dir), out_of_memory_as_error(f"the run in {self.dir}", TRAIN_LOWER):
                try:
                    self.check_dir()
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
            self.evaluate_at(state, step, done=self.evaluated_variants(step))
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
            values_ok = self.record_chunk(m, step, n, dt)
            step += n
            due = self.evaluation_due(step)
            if values_ok and (due or step >= c.steps or (c.checkpoint_every and step % c.checkpoint_every < n)):
                self._check_finite_state(state, step)
                save_checkpoint(self.dir / "checkpoints", state, step)
            if due:  # after the checkpoint: a kill during a long evaluation does not cost the training again
                self.evaluate_at(state, step)
            if bar:
                bar.update(n)
        if bar:
            bar.close()
        self.state = state
        return self.finish(state, timed_seconds / timed_steps if timed_steps else self._logged_seconds_per_step())

    def record_chunk(self, m: dict, start: int, n: int, seconds: float, **extra) -> bool:
        """After a chunk of `n` steps from `start` (`m`: its metrics): the NaN stop, its metrics row (with
        `extra` keys), the value check. Whether its state may be checkpointed (not while the critic is past
        its bound). `GroupRun` calls it for each of its runs."""
        self._check_finite(m, start)
        self.record({"phase": "train", "step": start + n, "wall_s": seconds, **extra, **recorded_metrics(m)})
        return self._check_values(m, start + n)

    def _replay_value_check(self) -> None:
        """A resumed run's value check continues from the values its kept metrics rows recorded."""
        if self.value_check is None:
            return
        for r in self.metrics.rows():
            if r["phase"] == "train" and (q := q_abs_max(r)) is not None:
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
        q = q_abs_max(m)
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
        write_json_atomic(self.dir / "summary.json", {**self.summary(None, None), "status": status, "stopped": message})

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

    # ----- the end -----


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=2.0)


def _effective(config: RunConfig) -> dict:
    """What a run trains from: the settings with every preset default filled, and no policy settings where
    no policy is trained (a preset default moved since a run was written is still that run)."""
    out = config.to_json()
    out.pop("preset", None)
    out["guidance"] = dataclasses.asdict(config.guidance_config())
    out["policy"] = dataclasses.asdict(config.policy_config()) if config.algo else None
    return out
