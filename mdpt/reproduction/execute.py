"""`mdpt reproduce`: the paper's three findings tested the way the paper tested them, end to end.

`Reproduction(protocol, out).execute()` trains the plan's runs (out/runs/<dataset>/<run>/, `plan.py`),
evaluates the guidance swaps at matched checkpoints (out/transfer/<dataset>.json: each guidance scores
candidates with its own rule and beta, each policy samples its own candidate count, or
`swap_candidates` for every swap), records the data's own statistics (out/data/<dataset>.json) and
writes the report (`render.write_report`), which is regenerated from what is on disk. Everything is
resumable: a finished run is skipped, a swap evaluated before is read back.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError
from mdpt.experiments.rundir import run_status, snapshot_dir
from mdpt.io import read_json, write_json_atomic
from mdpt.reports.markdown import hms
from mdpt.reproduction.estimate import estimate_seconds, swap_candidates
from mdpt.reproduction.plan import (
    INDEPENDENT_IQL,
    IQL_B,
    JOINT,
    JOINT_SELECTION,
    OWN,
    SEED_SWAPPED,
    Planned,
    Swap,
    cross_run,
    overridden_settings,
    own_guidance,
    plan,
    planned_swaps,
    run_name,
    run_role,
)
from mdpt.reproduction.protocol import Protocol, dataset_dir, read_protocol, transfer_cells
from mdpt.seeding import EVAL_ENV_SEED

REPRODUCTION_ENTRIES = frozenset({".lock", "protocol.json", "runs", "transfer", "data", "report"})
LOG = logging.getLogger("mdpt")


class Reproduction:
    """Execute a protocol in `out` (runs/, transfer/, report/); `log` receives progress lines."""

    def __init__(self, protocol: Protocol, out: str | Path, log: Callable | None = None, progress: bool = False):
        log = log or LOG.info
        self.p = protocol.validate()
        self.out = Path(out)
        self.runs_dir = self.out / "runs"
        self.log = log
        self.progress = progress

    def check_not_merged(self) -> None:
        """A merged reproduction (`merge.py`) is only reported: its runs lack their checkpoints."""
        try:  # a damaged plan is not a merged one: training rewrites it
            merged = (self.out / "protocol.json").exists() and read_protocol(self.out)["protocol"].get("shards")
        except MDPTError:
            merged = False
        if merged:
            raise MDPTError(f"{self.out}: a reproduction merged from shards; continue the shards (their own "
                            "commands) and merge them again, or pass --report-only")

    def planned(self) -> list[Planned]:
        return plan(self.p, self.runs_dir.resolve())

    def remaining(self, train_only: bool = False) -> list[Planned]:
        """The runs left to train and evaluate (`train_only`: to train)."""
        return [it for it in self.planned() if not self._skipped(it, train_only)]

    def remaining_swaps(self) -> list[Swap]:
        out = []
        for ds in self.p.datasets:
            path = self.out / "transfer" / f"{dataset_dir(ds)}.json"
            cells = transfer_cells(path)
            out += [sw for sw in planned_swaps(self.p) if not self._cached(cells, sw.key)]
        return out

    def estimate(self, backend: str, train_only: bool = False) -> tuple[float, list[Planned], list[Swap]]:
        """(seconds, runs, swaps) of what is left: training what is not trained yet, and unless
        `train_only` evaluating the runs and the swaps."""
        left, swaps = self.remaining(train_only), [] if train_only else self.remaining_swaps()
        trained = frozenset(it.key for it in left if run_status(self.runs_dir / it.key) == "trained")
        return estimate_seconds(left, self.p, backend, swaps, not train_only, trained), left, swaps

    def check_budget(self, budget_hours: float | None, backend: str, train_only: bool = False) -> float:
        seconds, left, swaps = self.estimate(backend, train_only)
        if budget_hours is not None and seconds > budget_hours * 3600:
            raise MDPTError(f"the plan's {len(left)} remaining run(s) and {len(swaps)} guidance swap(s) need about "
                            f"{hms(seconds)} on this machine "
                            f"({backend}), more than --budget-hours {budget_hours:g}: lower --steps, --seeds, "
                            "--datasets or --algos, or raise the budget")
        return seconds

    def execute(self, budget_hours: float | None = None, train_only: bool = False, group: bool | None = None) -> Path:
        """Train (and evaluate) what is left, then the swaps and the report. `train_only`: evaluations are
        deferred (snapshots kept, runs end `trained`) and no swaps run; a later call evaluates them.
        `group`: the runs of one name on the datasets of one environment train as one program
        (None: on an accelerator)."""
        import jax

        from mdpt.experiments.config import RunConfig
        from mdpt.experiments.rundir import RunLock, claim_folder, remove_empty, undo_claim
        from mdpt.io import is_temp_name

        created = claim_folder(self.out, REPRODUCTION_ENTRIES, "reproduction directory")
        self.out.mkdir(parents=True, exist_ok=True)
        with RunLock(self.out, "reproduction directory"):
            for stale in self.out.glob(".report.*"):  # a report a kill cut short (the old one stands)
                if is_temp_name(stale.name):
                    shutil.rmtree(stale, ignore_errors=True)
            moved = relocate(self.out)
            if moved:
                self.log(f"reproduce: this directory was moved (e.g. from the training machine); the stage-1 paths "
                         f"of {moved} run(s) now point inside it")
            backend = jax.default_backend()
            try:  # everything is checked before the plan is written: a refused call changes nothing
                self.check_not_merged()
                estimate = self.check_budget(budget_hours, backend, train_only)
                items = self.planned()
                configs = {it.key: RunConfig.from_dict(it.settings) for it in items}
                self.check_plan(items, configs)
            except MDPTError:
                undo_claim(self.out)
                remove_empty(created)
                raise
            write_json_atomic(self.out / "protocol.json", {"protocol": self.p.to_json(),
                                                           "runs": [it.key for it in items],
                                                           "root": str(self.out.resolve())})
            group = backend != "cpu" if group is None else group
            todo = [it for it in items if not self._skipped(it, train_only)]
            self.log(f"reproduce: {len(items)} runs planned, {len(items) - len(todo)} done; "
                     f"estimated {hms(estimate)} for the rest ({backend})"
                     + ("; the datasets of one environment train as one program" if group else ""))
            t0, done_s = time.monotonic(), 0.0
            datasets = {}
            for batch in training_batches(todo, configs, self.runs_dir, group):
                eta, left, _ = self.estimate(backend, train_only)
                what = batch[0].key if len(batch) == 1 else \
                    f"{batch[0].name} on {', '.join(dataset_dir(it.dataset) for it in batch)} (one program)"
                self.log(f"[{items.index(batch[0]) + 1}/{len(items)}] {what} ({batch[0].steps} steps x "
                         f"{batch[0].seeds} seeds); {len(left)} run(s) left, about {hms(eta)} to go")
                for run in self._train(batch, configs, datasets, train_only):
                    datasets[run.config.dataset] = run.dataset
                done_s = time.monotonic() - t0
            if train_only:
                self.log(f"reproduce: training done in {hms(done_s)}; its evaluations wait: copy {self.out} to a "
                         "machine with the simulator and run the same command there without --train-only")
            else:
                self.log(f"reproduce: training and curves done in {hms(done_s)}")
            for ds in self.p.datasets:
                self.record_data(ds, datasets.get(ds))
            if not train_only and planned_swaps(self.p):
                for ds in self.p.datasets:
                    self.swaps(dataset_dir(ds))
            from mdpt.reproduction.render import write_report

            return write_report(self.out)

    def check_plan(self, items: list[Planned], configs: dict) -> None:
        """Every --set key is used, every dataset is found, and every run already in the directory is the one
        this plan would train."""
        from mdpt.data.load import check_source
        from mdpt.experiments.runner import Run

        ignored = overridden_settings(self.p)
        if ignored:
            raise MDPTError(f"{ignored[0]} (--set/--config): every policy run of the plan sets its own {ignored[0]}, so "
                            "this value would be ignored; choose it with this command's flag instead (see --help)")
        for ds in self.p.datasets:
            check_source(ds)
        for it in items:
            if not Run(self.runs_dir / it.key, configs[it.key], resume=True).continues():
                path = self.out / "protocol.json"
                saved = read_protocol(self.out)["protocol"] if path.exists() else {}
                new = self.p.to_json()
                options = [f"{k} {new[k]} (here: {saved[k]})" for k in new if k in saved and saved[k] != new[k]]
                raise MDPTError(f"{self.runs_dir / it.key}: made with other options than this call's "
                                f"({', '.join(options[:3]) or 'their settings differ'}); repeat the options this "
                                "directory was made with (its report gives the command), or choose another --out")

    def _skipped(self, it: Planned, train_only: bool) -> bool:
        state = run_status(self.runs_dir / it.key)
        return state == "done" or (train_only and state == "trained")

    def _train(self, batch: list[Planned], configs: dict, datasets: dict, train_only: bool) -> list:
        """Train one batch of `training_batches` (one run, or a group as one program); its runs."""
        from mdpt.experiments.derived import DerivedRun
        from mdpt.experiments.group import GroupRun
        from mdpt.experiments.runner import Run

        common = {"log": self.log, "defer_evaluation": train_only}
        if len(batch) > 1:
            group = GroupRun([(self.runs_dir / it.key, configs[it.key]) for it in batch], datasets=datasets, **common)
            group.execute()
            return group.runs
        it = batch[0]
        common.update(progress=self.progress, dataset=datasets.get(it.dataset))
        if it.derive_from:
            run = DerivedRun(self.runs_dir / it.key, configs[it.key],
                             self.runs_dir / dataset_dir(it.dataset) / it.derive_from, **common)
        else:
            run = Run(self.runs_dir / it.key, configs[it.key], resume=True, **common)
        run.execute()
        return [run]

    def record_data(self, dataset: str, data=None) -> Path:
        return record_data(self.out, dataset, data, env=self.p.base.get("env"))

    # ----- guidance swaps at matched checkpoints -----
    def swaps(self, dataset: str) -> Path:
        """Step-matched guidance swaps of one dataset, each evaluated once (cached in transfer/)."""
        path = self.out / "transfer" / f"{dataset}.json"
        cells = transfer_cells(path)
        todo = {key: job for key, job in self._swap_jobs(dataset).items() if not self._cached(cells, key)}
        for i, (key, job) in enumerate(todo.items()):
            eta = estimate_seconds([], self.p, "cpu", [j["swap"] for j in list(todo.values())[i:]])
            self.log(f"transfer {dataset}: {key} ({i + 1}/{len(todo)}, about {hms(eta)} to go)")
            cells[key] = self._evaluate_swap(dataset, job)
            write_json_atomic(path, {"dataset": dataset, "cells": cells})
        write_json_atomic(path, {"dataset": dataset, "cells": cells})
        return path

    def _cached(self, cells: dict, key: str) -> bool:
        """A swap evaluated before under the same candidate rule."""
        return key in cells and cells[key].get("swap_candidates") == self.p.swap_candidates

    def _swap_jobs(self, dataset: str) -> dict[str, dict]:
        """The planned swaps whose policy snapshot is on disk, with the paths they read."""
        runs = self.runs_dir / dataset
        jobs = {}
        for sw in planned_swaps(self.p):
            snap = snapshot_dir(runs / sw.run, sw.step)
            if sw.kind in (SEED_SWAPPED, OWN) and run_role(sw.run) == JOINT:
                guidance = [snap / "guidance"]
            elif sw.kind == OWN:
                guidance = [own_guidance(self.p, runs, sw.run)]
            elif sw.kind == INDEPENDENT_IQL or sw.members:
                guidance = [runs / IQL_B / "guidance"] * max(sw.members, 1)
            elif sw.kind == JOINT_SELECTION:  # its own algorithm's joint critic of the same step
                guidance = [snapshot_dir(runs / run_name(sw.algo, JOINT), sw.step) / "guidance"]
            else:  # another algorithm's joint critic of the same step
                guidance = [snapshot_dir(runs / cross_run(sw.kind), sw.step) / "guidance"]
            if (snap / "policy").exists() and all(g.exists() for g in guidance):
                jobs[sw.key] = {"swap": sw, "policy": snap / "policy", "guidance": guidance,
                                "shift": int(sw.kind == SEED_SWAPPED)}
        return jobs

    def _evaluate_swap(self, dataset: str, job: dict) -> dict:
        import jax

        from mdpt.agent import SelectorConfig
        from mdpt.artifacts import load_guidance, load_policy
        from mdpt.evaluation.api import evaluate

        sw = job["swap"]
        policy = load_policy(job["policy"])
        if sw.members:  # K members: seed j of iql-b, each shared by every policy seed
            base = load_guidance(job["guidance"][0])
            guides = [base.select(j) for j in range(sw.members)]
        else:
            guides = [load_guidance(g) for g in job["guidance"]]
            if job["shift"]:
                g = guides[0]
                params = jax.tree.map(lambda x: np.roll(np.asarray(x), -job["shift"], axis=0), g.params)
                guides = [type(g)(g.module, params, g.normalizer, g.meta, g.path)]
        episodes = self.p.final_episodes if sw.step >= self.p.steps else self.p.curve_episodes
        selector = SelectorConfig(candidates=swap_candidates(self.p, sw.step), ensemble=sw.rule)
        start = time.perf_counter()
        ev = evaluate(policy, guides, selector=selector, episodes=episodes, seed=EVAL_ENV_SEED,
                      max_steps=self.p.eval_max_steps)
        return {"step": sw.step, "own": sw.run, "scores": ev.scores.tolist(), "episodes": episodes,
                "wall_s": time.perf_counter() - start,
                "selector": ev.record["selector"], "critic": ev.record.get("critic"),
                "guidance": [_inside(Path(g), self.out) for g in job["guidance"]], "shift": job["shift"],
                "swap_candidates": self.p.swap_candidates}


def record_data(out: Path, dataset: str, data=None, env: str | None = None) -> Path:
    """out/data/<dataset>.json: the data's own statistics (its episodes' normalized scores), which the
    report sets beside the policies' scores; written once."""
    path = Path(out) / "data" / f"{dataset_dir(dataset)}.json"
    if not path.exists():
        from mdpt import presets
        from mdpt.data.load import load_dataset, preset_dataset
        from mdpt.data.stats import dataset_summary

        write_json_atomic(path, dataset_summary(data if data is not None else load_dataset(dataset, env=env),
                                                presets.task_reference(preset_dataset(dataset))))  # as its runs score
    return path


def relocate(out: Path) -> int:
    """Rebase the runs' stage-1 guidance paths (absolute, inside the reproduction) after the directory
    moved, e.g. copied from the GPU machine that trained it to the machine that evaluates it; the
    number of runs changed. Their config.json otherwise no longer matches the planned config."""
    path = out / "protocol.json"
    try:
        saved = read_json(path, "reproduction plan") if path.exists() else {}
    except MDPTError:  # damaged: this call writes it again
        saved = {}
    old, new = saved.get("root") if isinstance(saved, dict) else None, str(out.resolve())
    if not old or old == new:
        return 0
    old = old.rstrip("/")
    changed = 0
    for key in saved.get("runs", []):
        config_path = out / "runs" / key / "config.json"
        if not config_path.exists():
            continue
        config = read_json(config_path, "run config")
        stage1 = config.get("stage1") or {}
        source = stage1.get("guidance_path") or ""
        if source.startswith(old + "/"):
            stage1["guidance_path"] = new + source[len(old):]
            write_json_atomic(config_path, config)
            changed += 1
    return changed


def _inside(path: Path, out: Path) -> str:
    """`path` relative to the reproduction `out` when it lies inside it (as a moved or merged copy still
    names it), else as given."""
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _start_step(run_dir: Path) -> int:
    """The step a run resumes from: its checkpoint's, or 0."""
    index = run_dir / "checkpoints" / "checkpoint.json"
    try:
        return int(read_json(index, "checkpoint index")["step"]) if index.exists() else 0
    except (MDPTError, KeyError, TypeError, ValueError):
        return -1  # unreadable: the run reports it itself, alone


def _group_key(it: Planned, config, runs_dir: Path) -> tuple | None:
    """Runs with equal keys train as one program; None: alone (derived, unfreezing, evaluation only,
    a dataset given by path, whose environment is known only once loaded)."""
    from mdpt.data.registry import DATASET_IDS, parse_dataset_id
    from mdpt.experiments.group import group_signature

    run_dir = runs_dir / it.key
    if it.derive_from or config.stage1.unfreeze_at is not None or it.dataset not in DATASET_IDS \
            or run_status(run_dir) not in ("new", "partial"):
        return None
    return parse_dataset_id(it.dataset).env.env_id, _start_step(run_dir), group_signature(config)


def training_batches(items: list[Planned], configs: dict, runs_dir: Path, group: bool) -> list[list[Planned]]:
    """`items` in batches to train: one run each, or with `group` the runs of one name whose datasets
    share an environment (and whose settings and resume step agree) as one batch, run name by run name
    in plan order (every dataset plans its runs in the same order, so inputs still come first)."""
    if not group:
        return [[it] for it in items]
    out = []
    for name in dict.fromkeys(it.name for it in items):
        groups: dict[tuple, list[Planned]] = {}
        for it in (x for x in items if x.name == name):
            key = _group_key(it, configs[it.key], runs_dir)
            if key is None:
                out.append([it])
            else:
                groups.setdefault(key, []).append(it)
        out += list(groups.values())
    return out
