"""Grid sweeps of Runs (`mdpt sweep CONFIG.yaml`), in local processes or on a Ray cluster.

The YAML file::

    base:                      # RunConfig settings shared by every trial
      dataset: bullet-hopper-medium-v0
      steps: 20000
      seeds: 3                 # seeds are vmapped inside each trial
    grid:                      # key -> list of values; trials = cartesian product
      algo: [dql, idql]
      mode: [joint, guidance-first]
      policy.eta: [0.5, 1.0]   # dotted keys reach into nested settings

To cap evaluation episodes, set `eval_max_steps: 200` in `base:` (a RunConfig setting). A
top-level `eval_max_steps:` (the older form) is still read and goes into `base:`.

Every trial's config is validated before any trial starts; a grid of more than MAX_TRIALS trials is
refused before it is expanded. Trial i runs in
`out/trial-<iii>-<short name>`; `out/sweep.json` lists trials, their configs and summaries.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from mdpt.errors import MDPTError, SweepFailed

LAUNCHERS = ("local", "ray")
TOP_KEYS = ("base", "grid", "eval_max_steps")
CONNECT_TIMEOUT = 10.0  # seconds to wait for a Ray cluster's address to accept a connection
MAX_TRIALS = 10_000  # trials one sweep file may expand to (each is a run directory)

LOG = logging.getLogger("mdpt")


def _short(value) -> str:
    text = str(value)
    if os.sep in text or text.endswith((".hdf5", ".h5")):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")[:40] or "x"


def expand(spec: dict) -> list[dict]:
    """[{name, config (dict), grid (values)}] for every trial of a sweep spec; validated."""
    import copy

    from mdpt.experiments.config import RunConfig, set_dotted
    from mdpt.settings import aliases, shown, unalias

    if not isinstance(spec, dict):
        raise MDPTError("sweep file: expected a mapping with `base:` and `grid:`")
    unknown = [k for k in spec if k not in TOP_KEYS]
    if unknown:
        raise MDPTError(f"sweep file: unknown key {shown(unknown[0])}; known keys: {', '.join(TOP_KEYS)}")
    base = spec.get("base") or {}
    grid = spec.get("grid") or {}
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise MDPTError("sweep file: `base` and `grid` must be mappings")
    base = unalias(RunConfig, base, "sweep file base")
    if spec.get("eval_max_steps") is not None:  # the older top-level form
        cap = spec["eval_max_steps"]
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise MDPTError(f"sweep file: eval_max_steps must be an integer >= 1, got {cap!r}")
        if isinstance(base.get("eval"), dict | None):
            base = {**base, "eval": {"max_steps": cap, **(base.get("eval") or {})}}
    count = 1
    for key, values in grid.items():
        if not isinstance(key, str):
            raise MDPTError(f"sweep grid key {shown(key)}: expected a setting's name (e.g. policy.eta)")
        if not isinstance(values, list) or not values:
            raise MDPTError(f"sweep grid {shown(key)}: expected a non-empty list of values")
        count *= len(values)
    if count > MAX_TRIALS:
        raise MDPTError(f"sweep grid: {count} trials, more than {MAX_TRIALS} in one sweep; split the grid into "
                        "several sweep files")
    table = aliases(RunConfig)
    keys = list(grid)
    named = [table.get(k, k) for k in keys]
    twice = [k for k, n in zip(keys, named, strict=True) if named.count(n) > 1]
    if twice:
        raise MDPTError(f"sweep grid: {' and '.join(twice)} set the same setting; keep one of them")
    trials = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        d = copy.deepcopy(base)
        for k, v in zip(keys, combo, strict=True):
            set_dotted(d, table.get(k, k), v, f"sweep grid key {shown(k)}")
        name = f"trial-{i:03d}" + ("-" + "-".join(_short(v) for v in combo) if combo else "")
        try:
            config = RunConfig.from_dict(d)
        except MDPTError as e:
            raise MDPTError(f"sweep: trial {name}: {e}; no trial was started") from None
        trials.append({"name": name, "config": config.to_json(), "grid": dict(zip(keys, combo, strict=True))})
    return trials


def run_trial(run_dir: str, config: dict) -> dict:
    """One trial (a Run), in whatever process runs it; never raises for an MDPTError."""
    from mdpt.experiments.config import RunConfig
    from mdpt.experiments.runner import Run

    try:
        summary = Run(run_dir, RunConfig.from_dict(config), resume=True, progress=False,
                      log=lambda msg: print(f"[{Path(run_dir).name}] {msg}", flush=True)).execute()
        return {"status": "ok", "summary": summary}
    except MDPTError as e:
        return {"status": "failed", "error": str(e)}


def run_sweep(spec_path: str | os.PathLike, out: str | os.PathLike, launcher: str = "local",
              workers: int = 1, address: str | None = None, log: Callable | None = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0) -> Path:
    log = log or LOG.info
    from mdpt.experiments.config import load_yaml
    from mdpt.experiments.rundir import claim_folder
    from mdpt.io import write_json_atomic

    if launcher not in LAUNCHERS:
        raise MDPTError(f"unknown launcher {launcher!r}; use one of: {', '.join(LAUNCHERS)}")
    if workers < 1:
        raise MDPTError(f"--workers must be >= 1, got {workers}")
    spec = load_yaml(spec_path)
    trials = expand(spec)
    if launcher == "ray" and address not in (None, "local"):
        check_reachable(address)
    out = Path(out)
    claim_folder(out, lambda name: name == "sweep.json" or name.startswith("trial-"), "sweep directory")
    out.mkdir(parents=True, exist_ok=True)
    log(f"sweep: {len(trials)} trial(s), validated; launcher {launcher}, {workers} worker(s); out {out}")
    jobs = [(str((out / t["name"]).resolve()), t["config"]) for t in trials]
    if launcher == "ray":
        results = _run_ray(jobs, address, workers, log, cpus_per_trial, gpus_per_trial)
    else:
        results = _run_local(jobs, workers, log)
    records = []
    for t, (run_dir, _), r in zip(trials, jobs, results, strict=True):
        records.append({**t, "run_dir": run_dir, **r})
    path = out / "sweep.json"
    write_json_atomic(path, {"spec": spec, "launcher": launcher, "trials": records})
    failed = [r for r in records if r["status"] != "ok"]
    for r in records:
        s = r.get("summary") or {}
        g = (s.get("final") or {}).get("guided")
        log(f"{r['name']}: {r['status']}" + (f", final guided score {g['mean']:.1f}" if g else "")
            + (f" ({r['error']})" if r.get("error") else ""))
    log(f"sweep results: {path}")
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(records)} trial(s) failed (first: {failed[0]['name']}: "
                        f"{failed[0]['error']}); see {path}")
    return path


def _run_local(jobs: list[tuple], workers: int, log: Callable) -> list[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: list[dict | None] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = {pool.submit(run_trial, *job): i for i, job in enumerate(jobs)}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as e:  # a crashed worker: record it, keep the others
                results[i] = {"status": "failed", "error": f"{e.__class__.__name__}: {e}"}
            log(f"trial {Path(jobs[i][0]).name} finished: {results[i]['status']}")
    return results


def trial_resources(cpus: float, gpus: float) -> dict:
    """What each Ray trial asks for, and the environment that keeps trials on one GPU from fighting
    for its memory (no preallocation, a share of the memory each) or silently running on the CPU
    (a trial that asked for a GPU may only use CUDA)."""
    if cpus <= 0 or gpus < 0:
        raise MDPTError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {cpus} and {gpus}")
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if gpus > 0:
        env.update(JAX_PLATFORMS="cuda", XLA_PYTHON_CLIENT_MEM_FRACTION=f"{min(0.95, 0.9 * gpus):.3f}")
    else:
        env["JAX_PLATFORMS"] = "cpu"
    return {"num_cpus": cpus, "num_gpus": gpus, "runtime_env": {"env_vars": env}}


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse a Ray address (`host:port` or `ray://host:port`) at which nothing accepts a connection within
    `timeout` seconds: Ray itself retries for minutes. Addresses without a port (`auto`) are Ray's to resolve."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise MDPTError(f"--address {address}: nothing answers there within {timeout:g} s ({e.strerror or e}); "
                        "start the Ray cluster (ray start --head) or check the address") from None


def _run_ray(jobs: list[tuple], address: str | None, workers: int, log: Callable, cpus: float = 1.0,
             gpus: float = 0.0) -> list[dict]:
    resources = trial_resources(cpus, gpus)
    try:
        import ray
    except ImportError:
        raise MDPTError("the ray launcher needs Ray: pip install 'ray>=2.30,<3' (or use --launcher local)") from None
    started = False
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=max(workers * cpus, cpus), include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, log_to_driver=True)
        started = True
    try:
        task = ray.remote(**resources)(run_trial)
        refs = [task.remote(*job) for job in jobs]
        results = []
        for job, ref in zip(jobs, refs, strict=True):
            try:
                results.append(ray.get(ref))
            except Exception as e:  # a worker that died
                results.append({"status": "failed", "error": f"{e.__class__.__name__}: {str(e).splitlines()[0]}"})
            log(f"trial {Path(job[0]).name} finished: {results[-1]['status']}")
        return results
    finally:
        if started:
            ray.shutdown()
