"""A training run in a directory: config, metrics, checkpoints, artifacts, summary; resumable.

run_dir/
  config.json        resolved RunConfig (+ versions)
  metrics.jsonl      one row per chunk ("train") and per evaluation ("eval")
  checkpoints/       exact training state (see training/checkpoint.py)
  policy/, guidance/ artifacts (safetensors + meta.json)
  summary.json       final (last-iterate) and best-checkpoint scores, time per step, peak memory
  .lock              held while a process works in the directory
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import jax
import numpy as np

from mdpt import __version__
from mdpt.agent import Agent, SelectorConfig
from mdpt.artifacts import Artifact, dataset_record, load_guidance, load_policy, save_artifact
from mdpt.data.batches import device_arrays
from mdpt.data.normalizer import Normalizer
from mdpt.data.registry import normalized_score
from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.guidance.module import GuidanceModule
from mdpt.io import is_temp_name, read_json, write_bytes_atomic, write_json_atomic
from mdpt.policies.module import DiffusionPolicy
from mdpt.training.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from mdpt.training.trainer import Trainer

MIN_FREE_BYTES = 64 << 20


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise MDPTError(f"{self.path.parent}: another mdpt process is using this run directory; "
                            "wait for it or choose another --out") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def check_writable(run_dir: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before training if the output directory is unwritable or nearly full."""
    run_dir = Path(run_dir)
    probe = run_dir / f".probe-{os.getpid()}.tmp"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_bytes(b"x")
        finally:
            probe.unlink(missing_ok=True)
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise MDPTError(f"{run_dir}: output directory is not writable ({e.strerror or e.__class__.__name__}); "
                        "choose another --out") from None
    if free < need_bytes:
        raise MDPTError(f"{run_dir}: only {free >> 20} MiB free, need about {need_bytes >> 20} MiB; "
                        "free space or choose another --out")


class MetricsLog:
    """Append-only JSONL; on resume, rows past the checkpoint (or torn by a kill) are dropped."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line torn by a kill: everything from here is redone
            if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
                break
            rows.append(row)
        return rows

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.rows() if r["step"] <= step]
        write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _to_list(x):
    return np.asarray(x).tolist()


class Run:
    def __init__(self, run_dir: str | os.PathLike, config: RunConfig, resume: bool = False,
                 progress: bool = True, log=print, dataset=None):
        self.dir = Path(run_dir)
        self.config = config.validate()
        self.resume = resume
        self.progress = progress
        self.log = log
        self._dataset = dataset
        self.metrics = MetricsLog(self.dir / "metrics.jsonl")
        self._agents: dict[str, Agent] = {}  # evaluation agents by variant, built once (see _variant_agent)

    # ----- set-up -----
    def _check_dir(self) -> None:
        check_writable(self.dir)
        existing = self.dir / "config.json"
        if existing.exists():
            if not self.resume:
                raise MDPTError(f"{self.dir}: already holds a run; pass --resume to continue it or choose another --out")
            old = read_json(existing, "run config")
            old_cfg = {k: v for k, v in old.items() if k != "versions"}
            old_cfg.setdefault("eval_max_steps", None)  # runs started before the setting existed
            if old_cfg != self.config.to_json():
                raise MDPTError(f"{self.dir}: --resume with a different config than the run was started with")
        write_json_atomic(existing, {**self.config.to_json(), "versions": _versions()})

    def _load_data(self):
        if self._dataset is None:
            from mdpt.data.load import load_dataset

            self._dataset = load_dataset(self.config.dataset, env=self.config.env)
        return self._dataset

    def _frozen_guidance(self, data, normalizer) -> Artifact | None:
        c = self.config
        if c.algo is None or c.mode != "guidance-first":
            return None
        if c.guidance_path:
            art = load_guidance(c.guidance_path, c.guidance_seed)
        else:  # guidance-first with no module given: train one first, in this run directory
            sub = RunConfig.from_dict({"dataset": c.dataset, "env": c.env, "guidance_kind": c.resolved_guidance_kind,
                                       "steps": c.guidance_steps or c.steps, "seeds": c.seeds, "seed": c.seed,
                                       "batch_size": c.batch_size, "chunk": c.chunk, "guidance": c.guidance})
            self.log(f"guidance-first: training {sub.resolved_guidance_kind} guidance ({sub.steps} steps) first")
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

    def build(self):
        c = self.config
        data = self._load_data()
        self.dataset = data
        self.normalizer = Normalizer.fit(data)
        arrays = device_arrays(data, self.normalizer)
        self.frozen_guidance = self._frozen_guidance(data, self.normalizer)
        policy = DiffusionPolicy(c.policy_config(), data.obs_dim, data.act_dim, c.steps) if c.algo else None
        frozen, g_role, p_role = {}, "train", "train" if c.algo else None
        if self.frozen_guidance is not None:
            guidance, g_role = self.frozen_guidance.module, "frozen"
            frozen["guidance"] = self.frozen_guidance.params
            g_norm = self.frozen_guidance.normalizer
            if not g_norm.same_as(self.normalizer):  # map our normalized states into the guidance's
                scale = self.normalizer.obs_std / g_norm.obs_std
                shift = (self.normalizer.obs_mean - g_norm.obs_mean) / g_norm.obs_std
                frozen["guidance_obs"] = (scale[None], shift[None])
        else:
            guidance = GuidanceModule(c.guidance_config(), data.obs_dim, data.act_dim, c.steps)
        if c.algo is None and guidance.needs_next_actions:
            if c.policy_path:
                art = load_policy(c.policy_path)
                frozen["policy"], p_role = art.params, "frozen"
                policy = art.module
            else:  # the critic of a behaviour-cloned diffusion policy (IDQL-style BC, sampled next actions)
                policy, p_role = DiffusionPolicy(_bc_policy_config(), data.obs_dim, data.act_dim, c.steps), "train"
        self.trainer = Trainer(arrays, policy, guidance, p_role, g_role, c.batch_size, frozen)
        self._agents = {}
        return self

    # ----- the loop -----
    def execute(self) -> dict:
        check_writable(self.dir)  # creates the directory; one-line error if it cannot be written
        with RunLock(self.dir):
            remove_stale_temporaries(self.dir)  # only under the lock: another process's are live
            self._check_dir()
            self.build()
            return self._train()

    def _train(self) -> dict:
        c = self.config
        state = self.trainer.init(c.seed_list)
        step = 0
        restored = load_checkpoint(self.dir / "checkpoints", state)
        if restored is not None:
            state, index = restored
            step = index["step"]
            prune_checkpoints(self.dir / "checkpoints", keep=index["file"])
            self.log(f"resuming {self.dir} from step {step}")
        self.metrics.truncate_after(step)
        if step >= c.steps and (self.dir / "summary.json").exists():
            return read_json(self.dir / "summary.json")
        bar = _progress(c.steps, step, self.progress, str(self.dir.name))
        timed_steps, timed_seconds, first = 0, 0.0, True
        while step < c.steps:
            n = min(c.chunk, c.steps - step)
            t0 = time.perf_counter()
            state, m = self.trainer.run(state, n)
            jax.block_until_ready(state)
            dt = time.perf_counter() - t0
            if not first:
                timed_steps, timed_seconds = timed_steps + n, timed_seconds + dt
            first = False
            self._check_finite(m, step, n)
            step += n
            self.metrics.append({"phase": "train", "step": step, "wall_s": dt,
                                 **{k: _to_list(v) for k, v in m.items() if "@" not in k and k != "nonfinite_at"}})
            evaluated = self._maybe_evaluate(state, step)
            if evaluated or step >= c.steps or (c.checkpoint_every and step % c.checkpoint_every < n):
                self._check_finite_state(state, step)
                save_checkpoint(self.dir / "checkpoints", state, step)
            if bar:
                bar.update(n)
        if bar:
            bar.close()
        self.state = state
        return self._finish(state, timed_seconds / timed_steps if timed_steps else None)

    def _check_finite(self, m: dict, step: int, n: int) -> None:
        bad = np.asarray(m["nonfinite_at"])
        if (bad >= 0).any():
            seed = int(np.argmax(bad >= 0))
            at = step + int(bad[seed]) + 1
            bad_keys = [k for k, v in m.items() if "@" not in k and k != "nonfinite_at"
                        and not np.isfinite(np.asarray(v)[seed])]
            name = bad_keys[0] if bad_keys else "loss"
            value = float(np.asarray(m[name])[seed]) if bad_keys else float("nan")
            raise MDPTError(f"non-finite {name} ({value}) at step {at} (seed {self.config.seed_list[seed]}); "
                            f"training stopped: {self._kept_checkpoint()}")

    def _check_finite_state(self, state, step: int) -> None:
        """Never checkpoint parameters that went non-finite even though every loss was finite."""
        for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(state)):
            x = np.asarray(leaf)
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                raise MDPTError(f"non-finite values in {jax.tree_util.keystr(path)} after step {step}; "
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
    def current_artifacts(self, state) -> tuple[Artifact | None, Artifact | None]:
        rec = dataset_record(self.dataset)
        meta = {"dataset": rec, "seeds": self.config.seed_list}
        pol = gui = None
        if self.config.algo:
            pol = Artifact(self.trainer.policy, state["policy"]["ema"], self.normalizer, meta, self.dir / "policy")
        if self.trainer.guidance_role == "train":
            gui = Artifact(self.trainer.guidance, state["guidance"]["params"], self.normalizer, meta, self.dir / "guidance")
        elif self.frozen_guidance is not None:
            gui = self.frozen_guidance
        return pol, gui

    def selector(self) -> SelectorConfig:
        c = self.config
        return SelectorConfig(c.selector, c.beta, c.candidates, c.temperature, c.cfg_weight)

    def _maybe_evaluate(self, state, step: int) -> bool:
        c = self.config
        due = step >= c.steps or (c.eval_every and step % c.eval_every == 0)
        if not c.algo or not c.eval_variants or not due:
            return False
        policy, guidance = self.current_artifacts(state)
        for variant in c.eval_variants:
            agent = self._variant_agent(variant, policy, guidance)
            t0 = time.perf_counter()
            result = evaluate_agent(agent, self.dataset.env, c.eval_episodes, seed=1000 + c.seed,
                                    max_steps=c.eval_max_steps)
            returns = result.returns
            scores = normalized_score(returns, self.dataset.env, c.reference, self.dataset.attrs)
            self.metrics.append({"phase": "eval", "step": step, "variant": variant, "returns": _to_list(returns),
                                 "scores": _to_list(scores), "reference": c.reference,
                                 "wall_s": time.perf_counter() - t0, "sim_s": result.sim_seconds,
                                 "policy_s": result.policy_seconds, "eval_s": result.total_seconds})
            self.log(f"step {step} {variant}: normalized score {np.mean(scores):.1f} "
                     f"(per seed {np.round(np.mean(scores, 1), 1).tolist()}, reference {c.reference})")
        return True

    def _variant_agent(self, variant: str, policy: Artifact, guidance: Artifact | None) -> Agent:
        """One Agent per variant for the whole run: later evaluations swap in the current parameters
        and reuse its compiled function (the random guidance keeps its fixed random parameters)."""
        c = self.config
        cache = self._agents
        if variant not in cache:
            cache[variant] = variant_agent(variant, policy, guidance, self.selector(), c.allow_data_mismatch, c.seed)
            return cache[variant]
        guidance_params = guidance.params if variant == "guided" and guidance is not None else None
        return cache[variant].with_params(policy.params, guidance_params)

    # ----- the end -----
    def _finish(self, state, seconds_per_step) -> dict:
        c = self.config
        policy, guidance = self.current_artifacts(state)
        rec = dataset_record(self.dataset)
        common = {"mode": c.mode if c.algo else "guidance-only", "run_dir": str(self.dir)}
        if self.trainer.guidance_role == "train":
            extra = {**common}
            if self.trainer.guidance.needs_next_actions:
                extra["next_action_source"] = c.policy_path or ("joint policy" if c.algo else "behaviour-cloned diffusion policy")
            save_artifact(self.dir / "guidance", "guidance", self.trainer.guidance, state["guidance"]["params"],
                          self.normalizer, rec, c.seed_list, c.steps, extra)
        if policy is not None:
            extra = {**common}
            if self.frozen_guidance is not None:
                extra["trained_with_guidance"] = {"path": str(Path(self.frozen_guidance.path).resolve()),
                                                  "kind": self.frozen_guidance.module.kind,
                                                  "fingerprint": self.frozen_guidance.fingerprint,
                                                  "mismatch_override": self.frozen_guidance.fingerprint != rec["fingerprint"]}
            else:
                extra["trained_with_guidance"] = {"path": str((self.dir / "guidance").resolve()),
                                                  "kind": self.trainer.guidance.kind}
            save_artifact(self.dir / "policy", "policy", self.trainer.policy, state["policy"]["ema"],
                          self.normalizer, rec, c.seed_list, c.steps, extra)
        summary = self._summary(seconds_per_step)
        write_json_atomic(self.dir / "summary.json", summary)
        return summary

    def _summary(self, seconds_per_step) -> dict:
        c = self.config
        evals = [r for r in self.metrics.rows() if r["phase"] == "eval"]
        final, best = {}, {}
        for r in evals:
            v = r["variant"]
            final[v] = {"step": r["step"], "scores": r["scores"], "mean": float(np.mean(r["scores"]))}
            if v not in best or np.mean(r["scores"]) > best[v]["mean"]:
                best[v] = final[v]
        return {
            "name": self.dir.name, "algo": c.algo, "mode": c.mode if c.algo else "guidance-only",
            "guidance_kind": (self.frozen_guidance.module.kind if self.frozen_guidance else self.trainer.guidance.kind),
            "dataset": c.dataset, "dataset_fingerprint": self.dataset.fingerprint, "reference": c.reference,
            "seeds": c.seed_list, "steps": c.steps, "final": final, "best": best,
            "seconds_per_step": seconds_per_step, "peak_memory_bytes": self.peak_memory_bytes(),
            "dataset_mean_score": float(np.mean(normalized_score(self.dataset.episode_returns, self.dataset.env,
                                                                 c.reference, self.dataset.attrs))),
        }

    def peak_memory_bytes(self) -> int | None:
        """Peak memory of the compiled training chunk (XLA memory analysis, on every backend) less the
        resident dataset, which every mode shares. The chunk was compiled for training already, so
        this normally costs no compilation."""
        try:
            state = jax.eval_shape(lambda: self.trainer.init(self.config.seed_list))
            compiled = self.trainer.compiled(state, min(self.config.chunk, self.config.steps))
            from mdpt.experiments.profiling import compiled_peak_bytes

            return compiled_peak_bytes(compiled) - self.trainer.dataset_bytes
        except Exception:  # analysis is best-effort; it never fails a run
            return None


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporaries a killed process left (`.NAME.XXXX.tmp` files and dirs, `.NAME.old-PID`).

    Call only while holding the run lock: a live writer's temporaries look the same.
    """
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "policy", run_dir / "guidance"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_temp_name(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _bc_policy_config():
    from mdpt.policies.module import PolicyConfig

    return PolicyConfig(algo="idql", net="mlp")  # a light BC sampler: it only supplies next actions


def variant_agent(variant: str, policy: Artifact, guidance: Artifact | None, selector: SelectorConfig,
                  allow_mismatch: bool, seed: int) -> Agent:
    """guided: own guidance; unguided: plain sampling; random-guidance: an untrained guidance."""
    if variant == "unguided" or guidance is None:
        return Agent(policy, None, SelectorConfig("none", selector.beta, 1, selector.temperature, selector.cfg_weight))
    if variant == "random-guidance":
        module = guidance.module
        keys = jax.random.split(jax.random.PRNGKey(10_000 + seed), policy.num_seeds)
        params = jax.vmap(lambda k: module.init(k)["params"])(keys)
        guidance = Artifact(module, params, guidance.normalizer, {**guidance.meta}, None)
        guidance.meta["dataset"] = policy.meta.get("dataset", {})
    return Agent(policy, guidance, selector, allow_mismatch)


def evaluate_agent(agent: Agent, env, episodes: int, seed: int = 0, max_steps: int | None = None):
    """The EvalResult (returns (seeds, episodes), lengths, sim/policy/total seconds) of an agent for all
    its policy seeds at once; one batched agent call per env step."""
    from mdpt.evaluation.rollout import evaluate

    key = jax.random.PRNGKey(seed)

    def act_fn(obs, t):
        return agent.act(obs, jax.random.fold_in(key, t))

    return evaluate(act_fn, env, agent.num_seeds, episodes, seed=seed, max_steps=max_steps)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=2.0)


def _versions() -> dict:
    import flax
    import optax

    return {"mdpt": __version__, "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "backend": jax.default_backend()}
