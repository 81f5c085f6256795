"""`mdpt reproduce`: the paper's three findings tested the way the paper tested them, end to end.

For every dataset and algorithm the plan trains (out/runs/<dataset>/<run>/, one `Run` each, seeds
vmapped inside each program):

- `iql-a`, `iql-b`: two independent IQL guidance modules (seeds SEED.. and SEED+1000..): `iql-a` is
  the stage-1 guidance of the guidance-first runs, `iql-b` the independent guidance swapped in at
  inference and the members of guidance ensembles;
- `critic-authors` (`--stage1 authors`): the paper's stage-1 variant, a dql-critic whose next
  actions come from an untrained actor and whose target network never moves;
- `<algo>-joint`: as published (the algorithm's own critic, trained jointly), evaluated along
  training with its guidance, without it (plain sampling) and with an untrained guidance;
- `<algo>-gfdt`: guidance-first against the frozen stage-1 guidance (optionally unfrozen at
  `--unfreeze-at`), evaluated with and without it;
- `<algo>-bc` (dql, edp): the same policy with eta = 0 (no guidance in training), evaluated with
  critic re-selection (iql-a at inference) and with plain sampling;
- `<algo>-random` (dql, edp): trained against a frozen untrained critic, evaluated with it.
IDQL's policy never sees its critic in training, so its no-guidance and random-guidance training
controls are IDQL itself; its necessity is measured at inference only (the report says so). For
the same reason `idql-gfdt`'s policy is `idql-joint`'s bit for bit: it trains one chunk, which
checks that, and takes the rest from the joint run's snapshots (`derived.DerivedRun`; it trains
in full if the chunk differs, or with `--train-every-run`).

Then, at the last `transfer_points` evaluation steps (matched checkpoints: every run saves its
artifacts at each evaluation), guidance swaps (out/transfer/<dataset>.json): each policy seed with
another seed's guidance of the same step (joint) or with the independent iql-b (guidance-first);
across algorithms in both directions (the DQL policy with IDQL's IQL critic, the IDQL policy with
DQL's critic, step-matched); and K-member ensembles of iql-b (mean and min of min-Q) at the last
step. Each guidance scores candidates with its own rule and beta; each policy samples its own
candidate count, or `swap_candidates` for every swap: then each (policy, step) is also evaluated
with its own guidance at that count and seed (an `own` cell), and swaps are compared with it.

The data's own statistics (out/data/<dataset>.json: its episodes scored like the policies) go
beside the policies' scores in the report. Everything is resumable: a finished run is skipped, a
swap evaluated before is read back; the report (`findings.write_report`) is regenerated from what
is on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError
from mdpt.io import read_json, write_json_atomic

CONTROLS_WITH_Q = ("dql", "edp")  # algorithms whose policy loss uses the guidance in training
STUDIES = ("necessity", "gfdt-vs-joint", "transfer")
STAGE1 = ("iql", "authors")
REPRODUCTION_ENTRIES = frozenset({".lock", "protocol.json", "runs", "transfer", "data", "report"})
# Estimated seed-steps per second of each update on a 2-core CPU and on an H200 at 15-20 replicas
# (benchmarks/RESULTS.md); only used to estimate a plan's wall time.
RATES = {"cpu": {"iql": 240.0, "dql-joint": 48.0, "dql-gf": 60.0, "idql-joint": 30.0, "idql-gf": 35.0,
                 "edp-joint": 50.0, "edp-gf": 150.0, "dql-bc": 150.0, "edp-bc": 150.0, "critic": 60.0},
         "gpu": {"iql": 47_000.0, "dql-joint": 15_000.0, "dql-gf": 18_000.0, "idql-joint": 16_000.0,
                 "idql-gf": 22_000.0, "edp-joint": 17_000.0, "edp-gf": 60_000.0, "dql-bc": 40_000.0,
                 "edp-bc": 40_000.0, "critic": 15_000.0}}
# Evaluation on a 2-core CPU, seconds per episode of one seed (1000 env steps): the simulator and one
# sample, plus one denoising chain per candidate. Fitted to the hopper reproduction: DQL 63 s for
# 3 seeds x 10 episodes at 50 candidates; IDQL (LN-ResNet) 1776 s at 256 candidates, 90-110 s for
# 3 x 5 at 32. EDP samples with 15 solver steps, three times DQL's 5.
EPISODE_COST = {"dql": (1.0, 0.025), "edp": (1.0, 0.075), "idql": (1.5, 0.235), "cfg": (1.0, 0.025)}

LOG = logging.getLogger("mdpt")


@dataclass(frozen=True)
class Protocol:
    datasets: tuple[str, ...]
    algos: tuple[str, ...] = ("dql", "idql")
    seeds: int = 3
    seed: int = 0
    steps: int = 30_000
    eval_every: int = 5_000
    curve_episodes: int = 5
    final_episodes: int = 10
    curve_candidates: int | None = None  # None: each algorithm's own
    eval_max_steps: int | None = None
    stage1: str = "iql"
    unfreeze_at: int | None = None
    ensemble_k: int = 3
    transfer_points: int = 2
    swap_candidates: int | None = None  # None: each swap as its run evaluates; N: every swap and an own cell at N
    studies: tuple[str, ...] = STUDIES  # a subset plans only the runs (and swaps) those studies need
    derive: bool = True  # a guidance-first policy that ignores its guidance (IDQL) is taken from its joint run
    base: dict = field(default_factory=dict)  # settings under every run (e.g. tiny networks in tests)

    def validate(self) -> Protocol:
        from mdpt.policies.module import POLICY_ALGOS

        if not self.datasets:
            raise MDPTError("no datasets: pass --datasets ID,... (or 'all' with datasets in the data directory)")
        for name, values in (("--datasets", self.datasets), ("--algos", self.algos)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise MDPTError(f"{name}: {twice[0]} is given twice; name each once")
        bad = [a for a in self.algos if a not in POLICY_ALGOS or a == "cfg"]
        if bad or not self.algos:
            raise MDPTError(f"unknown algo {bad[0] if bad else ''!r}; use any of: dql, idql, edp")
        if self.stage1 not in STAGE1:
            raise MDPTError(f"unknown stage-1 guidance {self.stage1!r}; use one of: {', '.join(STAGE1)}")
        from mdpt.settings import check_count

        for name in ("seeds", "steps", "eval_every", "curve_episodes", "final_episodes", "transfer_points", "seed",
                     "ensemble_k", "curve_candidates", "eval_max_steps", "unfreeze_at", "swap_candidates"):
            if getattr(self, name) is not None or name in ("seed", "seeds", "steps"):  # None: an option left unset
                check_count(getattr(self, name), f"--{name.replace('_', '-')}", int(name != "seed"), 2**31 - 1)
        if self.eval_every > self.steps:
            raise MDPTError(f"--eval-every {self.eval_every} is beyond --steps {self.steps}: no learning curve")
        bad = [x for x in self.studies if x not in STUDIES]
        if bad or not self.studies:
            raise MDPTError(f"unknown study {bad[0] if bad else ''!r}; use any of: {', '.join(STUDIES)}")
        if not 1 <= self.ensemble_k <= self.seeds:
            raise MDPTError(f"--ensemble-k must be in 1..--seeds ({self.seeds}): the members are iql-b's seeds")
        ignored = overridden_settings(self)
        if ignored:
            raise MDPTError(f"{ignored[0]} (--set/--config): every policy run of the plan sets its own {ignored[0]}, so "
                            "this value would be ignored; choose it with this command's flag instead (see --help)")
        return self


def overridden_settings(p: Protocol) -> list[str]:
    """The settings under every run (`base`: --set, --config) that the plan overrides in each of its policy
    runs: values a user gave that no run would use."""
    from mdpt.settings import flatten

    base = flatten(p.base)
    runs = [flatten(it.settings) for it in plan(p, Path("runs")) if it.algo]
    return [key for key, value in base.items() if runs and all(r.get(key, value) != value for r in runs)]


def dataset_dir(dataset: str) -> str:
    """A dataset's folder name: its id, or a path's file stem."""
    return dataset if "/" not in dataset and not dataset.endswith((".hdf5", ".h5")) else Path(dataset).stem


@dataclass
class Planned:
    dataset: str
    name: str
    settings: dict
    update: str  # key of RATES
    steps: int
    seeds: int
    algo: str | None
    after: tuple[str, ...] = ()
    derive_from: str | None = None  # the joint run whose policy this guidance-first run takes

    @property
    def key(self) -> str:
        return f"{dataset_dir(self.dataset)}/{self.name}"

    @property
    def trained_steps(self) -> int:
        """Steps this run trains: all, or a derived run's first chunk."""
        from mdpt.experiments.config import RunConfig

        chunk = self.settings.get("chunk") or RunConfig.__dataclass_fields__["chunk"].default
        return min(chunk, self.steps) if self.derive_from else self.steps


def _eval(p: Protocol, variants: list[str]) -> dict:
    ev = {"every": p.eval_every, "episodes": p.curve_episodes, "final_episodes": p.final_episodes,
          "variants": variants, "snapshots": True}
    if p.eval_max_steps is not None:
        ev["max_steps"] = p.eval_max_steps
    if p.curve_candidates is not None:
        ev["curve_candidates"] = p.curve_candidates
    return ev


def stage1_guidance(p: Protocol, dataset_runs: Path) -> Path:
    """The frozen guidance the guidance-first runs of one dataset train against."""
    return dataset_runs / ("critic-authors" if p.stage1 == "authors" else "iql-a") / "guidance"


def plan(p: Protocol, runs_dir: Path) -> list[Planned]:
    """Every run of the protocol, in an order where each run's inputs come first."""
    from mdpt.experiments.derived import policy_ignores_guidance
    from mdpt.presets import merge

    out: list[Planned] = []
    necessity, transfer = "necessity" in p.studies, "transfer" in p.studies
    for ds in p.datasets:
        common = merge(p.base, {"dataset": ds, "seeds": p.seeds, "seed": p.seed, "steps": p.steps})
        here = runs_dir / dataset_dir(ds)

        def add(name, settings, update, algo=None, after=(), derive_from=None, ds=ds, common=common):
            out.append(Planned(ds, name, merge(common, settings), update, p.steps, p.seeds, algo, tuple(after),
                               derive_from))

        add("iql-a", {"guidance": {"kind": "iql"}}, "iql")
        if transfer:
            add("iql-b", {"guidance": {"kind": "iql"}, "seed": p.seed + 1000}, "iql")
        stage1 = stage1_guidance(p, here)
        if p.stage1 == "authors":
            # the paper's script: next actions from an untrained actor, the target never updated
            add("critic-authors", {"guidance": {"kind": "dql-critic", "tau": 0.0},
                                   "stage1": {"next_actions": "untrained"}}, "critic")
        for algo in p.algos:
            add(f"{algo}-joint", {"algo": algo, "mode": "joint",
                                  "eval": _eval(p, ["guided", "unguided", "random-guidance"])}, f"{algo}-joint", algo)
            gf = {"algo": algo, "mode": "guidance-first", "eval": _eval(p, ["guided", "unguided"]),
                  "stage1": {"guidance_path": str(stage1)}}
            if p.unfreeze_at is not None:
                gf["stage1"]["unfreeze_at"] = p.unfreeze_at
            derive = f"{algo}-joint" if p.derive and policy_ignores_guidance(algo) else None
            add(f"{algo}-gfdt", gf, f"{algo}-gf", algo, after=(stage1.parent.name, *([derive] if derive else [])),
                derive_from=derive)
            if algo in CONTROLS_WITH_Q and necessity:
                add(f"{algo}-bc", {"algo": algo, "mode": "guidance-first", "policy": {"eta": 0.0},
                                   "eval": _eval(p, ["guided", "unguided"]),
                                   "stage1": {"guidance_path": str(here / "iql-a" / "guidance")}},
                    f"{algo}-bc", algo, after=("iql-a",))
                add(f"{algo}-random", {"algo": algo, "mode": "guidance-first", "guidance": {"kind": "dql-critic"},
                                       "eval": _eval(p, ["guided", "unguided"]),
                                       "stage1": {"guidance_path": "random"}}, f"{algo}-gf", algo)
    return out


@dataclass(frozen=True)
class Swap:
    run: str  # the policy's run, e.g. dql-joint
    step: int
    kind: str  # own | seed-swapped | independent-iql | <algo>-joint-guidance | ensemble-K-mean|min
    algo: str  # the policy's algorithm (it sets the candidate count and the cost)
    members: int = 0
    rule: str = "mean"

    @property
    def key(self) -> str:
        return f"{self.run}@{self.step}|{self.kind}"


def eval_steps(p: Protocol) -> list[int]:
    """The steps every run evaluates (and snapshots) at: each --eval-every and the last."""
    return sorted({*range(p.eval_every, p.steps, p.eval_every), p.steps})


def planned_swaps(p: Protocol) -> list[Swap]:
    """Every guidance swap of one dataset, at the last `transfer_points` evaluation steps."""
    points = eval_steps(p)[-p.transfer_points:]
    out = []
    for algo in p.algos:
        joint, gf = f"{algo}-joint", f"{algo}-gfdt"
        for t in points:
            if p.swap_candidates is not None:  # the comparison's own side, at the swaps' count and seed
                out += [Swap(joint, t, "own", algo), Swap(gf, t, "own", algo)]
            out.append(Swap(joint, t, "seed-swapped", algo))
            out += [Swap(joint, t, f"{other}-joint-guidance", algo) for other in p.algos if other != algo]
            out.append(Swap(gf, t, "independent-iql", algo))
        for run in (joint, gf):
            out += [Swap(run, points[-1], f"ensemble-{p.ensemble_k}-{rule}", algo, p.ensemble_k, rule)
                    for rule in ("mean", "min")]
    return out


def read_protocol(out: Path) -> dict:
    """out/protocol.json, checked: {protocol: {...}, runs: [dataset/run, ...], root}."""
    path = Path(out) / "protocol.json"
    saved = read_json(path, "reproduction plan")
    if not (isinstance(saved, dict) and isinstance(saved.get("protocol"), dict)
            and isinstance(saved.get("runs"), list) and all(isinstance(k, str) and "/" in k for k in saved["runs"])):
        raise MDPTError(f"{path}: damaged reproduction plan (not the object mdpt reproduce writes); run the "
                        "mdpt reproduce command that made this directory again (without --report-only): it "
                        "rewrites the plan and keeps every finished run")
    return saved


def transfer_cells(path: Path) -> dict:
    """The swaps cached in out/transfer/<dataset>.json ({} when none), checked."""
    if not path.exists():
        return {}
    cache = read_json(path, "transfer results")
    cells = cache.get("cells") if isinstance(cache, dict) else None
    if not isinstance(cells, dict) or not all(isinstance(c, dict) and isinstance(c.get("scores"), list)
                                              for c in cells.values()):
        raise MDPTError(f"{path}: damaged transfer cache (its cells are missing or not mdpt's); delete it and run "
                        "the same command again: its guidance swaps are evaluated again")
    return cells


def run_state(run_dir: Path) -> str:
    """'done' (summary written, finished), 'trained' (trained elsewhere, not evaluated), 'partial', 'new'."""
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            status = read_json(summary, "run summary").get("status", "finished")
        except (MDPTError, AttributeError):
            return "partial"
        return {"finished": "done", "trained": "trained"}.get(status, "partial")
    return "partial" if (run_dir / "checkpoints").exists() else "new"


def _episode_seconds(algo: str, candidates: int, episodes: int, seeds: int) -> float:
    fixed, per_candidate = EPISODE_COST[algo]
    return episodes * seeds * (fixed + per_candidate * candidates)


def _candidates(p: Protocol, algo: str, step: int, guided: bool) -> int:
    from mdpt.presets import ALGORITHMS

    if not guided:
        return 1
    if step < p.steps and p.curve_candidates is not None:
        return p.curve_candidates
    return ALGORITHMS[algo]["selector"]["candidates"]


def swap_candidates(p: Protocol, step: int) -> int | None:
    """Candidates a swap at `step` scores: `--swap-candidates`, else the curve count before the last step;
    None: the policy's own preset."""
    if p.swap_candidates is not None:
        return p.swap_candidates
    return p.curve_candidates if step < p.steps else None


def evaluation_seconds(it: Planned, p: Protocol) -> float:
    """A run's evaluations on a CPU: every variant at every evaluation step, at its candidate count."""
    total = 0.0
    for t in eval_steps(p) if it.algo else ():
        episodes = p.final_episodes if t >= p.steps else p.curve_episodes
        for variant in it.settings.get("eval", {}).get("variants", []):
            total += _episode_seconds(it.algo, _candidates(p, it.algo, t, variant != "unguided"), episodes, it.seeds)
    return total


def estimate_seconds(items: list[Planned], p: Protocol, backend: str, swaps: list[Swap] = (),
                     evaluate: bool = True, trained: frozenset[str] = frozenset()) -> float:
    """Rough wall time of training `items` (but those whose key is in `trained`), evaluating them
    (`evaluate`; on a CPU) and evaluating `swaps` (RATES, EPISODE_COST)."""
    rates = RATES["gpu" if backend == "gpu" else "cpu"]
    total = 0.0
    for it in items:
        total += 0.0 if it.key in trained else it.trained_steps * it.seeds / rates[it.update]
        total += evaluation_seconds(it, p) if evaluate and backend != "gpu" else 0.0
    for sw in swaps if backend != "gpu" else ():
        episodes = p.final_episodes if sw.step >= p.steps else p.curve_episodes
        n = swap_candidates(p, sw.step) or _candidates(p, sw.algo, sw.step, True)
        total += _episode_seconds(sw.algo, n, episodes, p.seeds)
    return total


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Reproduction:
    """Execute a protocol in `out` (runs/, transfer/, report/); `log` receives progress lines."""

    def __init__(self, protocol: Protocol, out: str | Path, log: Callable | None = None, progress: bool = False):
        log = log or LOG.info
        self.p = protocol.validate()
        self.out = Path(out)
        self.runs_dir = self.out / "runs"
        self.log = log
        self.progress = progress

    def planned(self) -> list[Planned]:
        return plan(self.p, self.runs_dir.resolve())

    def remaining(self, train_only: bool = False) -> list[Planned]:
        """The runs left to train and evaluate (`train_only`: to train)."""
        return [it for it in self.planned() if not self._skipped(it, train_only)]

    def remaining_swaps(self) -> list[Swap]:
        if "transfer" not in self.p.studies:
            return []
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
        trained = frozenset(it.key for it in left if run_state(self.runs_dir / it.key) == "trained")
        return estimate_seconds(left, self.p, backend, swaps, not train_only, trained), left, swaps

    def check_budget(self, budget_hours: float | None, backend: str, train_only: bool = False) -> float:
        seconds, left, swaps = self.estimate(backend, train_only)
        if budget_hours is not None and seconds > budget_hours * 3600:
            raise MDPTError(f"the plan's {len(left)} remaining run(s) and {len(swaps)} guidance swap(s) need about "
                            f"{_hms(seconds)} on this machine "
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
                estimate = self.check_budget(budget_hours, backend, train_only)
                items = self.planned()
                configs = {it.key: RunConfig.from_dict(it.settings) for it in items}
                self.check_plan(items, configs)
            except MDPTError:
                undo_claim(self.out)
                remove_empty(created)
                raise
            write_json_atomic(self.out / "protocol.json", {"protocol": _protocol_json(self.p),
                                                           "runs": [it.key for it in items],
                                                           "root": str(self.out.resolve())})
            group = backend != "cpu" if group is None else group
            todo = [it for it in items if not self._skipped(it, train_only)]
            self.log(f"reproduce: {len(items)} runs planned, {len(items) - len(todo)} done; "
                     f"estimated {_hms(estimate)} for the rest ({backend})"
                     + ("; the datasets of one environment train as one program" if group else ""))
            t0, done_s = time.monotonic(), 0.0
            datasets = {}
            for batch in training_batches(todo, configs, self.runs_dir, group):
                eta, left, _ = self.estimate(backend, train_only)
                what = batch[0].key if len(batch) == 1 else \
                    f"{batch[0].name} on {', '.join(dataset_dir(it.dataset) for it in batch)} (one program)"
                self.log(f"[{items.index(batch[0]) + 1}/{len(items)}] {what} ({batch[0].steps} steps x "
                         f"{batch[0].seeds} seeds); {len(left)} run(s) left, about {_hms(eta)} to go")
                for run in self._train(batch, configs, datasets, train_only):
                    datasets[run.config.dataset] = run.dataset
                done_s = time.monotonic() - t0
            if train_only:
                self.log(f"reproduce: training done in {_hms(done_s)}; its evaluations wait: copy {self.out} to a "
                         "machine with the simulator and run the same command there without --train-only")
            else:
                self.log(f"reproduce: training and curves done in {_hms(done_s)}")
            for ds in self.p.datasets:
                self.record_data(ds, datasets.get(ds))
            if not train_only and "transfer" in self.p.studies:
                for ds in self.p.datasets:
                    self.swaps(dataset_dir(ds))
            from mdpt.experiments.findings import write_report

            return write_report(self.out)

    def check_plan(self, items: list[Planned], configs: dict) -> None:
        """Every dataset is found, and every run already in the directory is the one this plan would train."""
        from mdpt.data.load import check_source
        from mdpt.experiments.runner import Run

        for ds in self.p.datasets:
            check_source(ds)
        for it in items:
            if not Run(self.runs_dir / it.key, configs[it.key], resume=True).continues():
                path = self.out / "protocol.json"
                saved = read_protocol(self.out)["protocol"] if path.exists() else {}
                new = _protocol_json(self.p)
                options = [f"{k} {new[k]} (here: {saved[k]})" for k in new if k in saved and saved[k] != new[k]]
                raise MDPTError(f"{self.runs_dir / it.key}: made with other options than this call's "
                                f"({', '.join(options[:3]) or 'their settings differ'}); repeat the options this "
                                "directory was made with (its report gives the command), or choose another --out")

    def _skipped(self, it: Planned, train_only: bool) -> bool:
        state = run_state(self.runs_dir / it.key)
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
            self.log(f"transfer {dataset}: {key} ({i + 1}/{len(todo)}, about {_hms(eta)} to go)")
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
        stage1 = stage1_guidance(self.p, runs)
        jobs = {}
        for sw in planned_swaps(self.p):
            snap = runs / sw.run / "snapshots" / f"step-{sw.step:09d}"
            if sw.kind in ("seed-swapped", "own") and sw.run.endswith("-joint"):
                guidance = [snap / "guidance"]
            elif sw.kind in ("own", "independent-iql") or sw.members:
                guidance = [stage1 if sw.kind == "own" else runs / "iql-b" / "guidance"] * max(sw.members, 1)
            else:  # another algorithm's joint critic of the same step
                guidance = [runs / sw.kind.removesuffix("-guidance") / "snapshots" / f"step-{sw.step:09d}" / "guidance"]
            if (snap / "policy").exists() and all(g.exists() for g in guidance):
                jobs[sw.key] = {"swap": sw, "policy": snap / "policy", "guidance": guidance,
                                "shift": int(sw.kind == "seed-swapped")}
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
        ev = evaluate(policy, guides, selector=selector, episodes=episodes, seed=1000 + self.p.seed,
                      max_steps=self.p.eval_max_steps)
        return {"step": sw.step, "own": sw.run, "scores": ev.scores.tolist(), "episodes": episodes,
                "wall_s": time.perf_counter() - start,
                "selector": ev.record["selector"], "critic": ev.record.get("critic"),
                "guidance": [str(g) for g in job["guidance"]], "shift": job["shift"],
                "swap_candidates": self.p.swap_candidates}


def record_data(out: Path, dataset: str, data=None, env: str | None = None) -> Path:
    """out/data/<dataset>.json: the data's own statistics (its episodes' normalized scores), which the
    report sets beside the policies' scores; written once."""
    path = Path(out) / "data" / f"{dataset_dir(dataset)}.json"
    if not path.exists():
        from mdpt.data.load import load_dataset
        from mdpt.data.stats import dataset_summary

        write_json_atomic(path, dataset_summary(data if data is not None else load_dataset(dataset, env=env)))
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
            or run_state(run_dir) not in ("new", "partial"):
        return None
    return parse_dataset_id(it.dataset).env.name, _start_step(run_dir), group_signature(config)


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


def _protocol_json(p: Protocol) -> dict:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(p)))
