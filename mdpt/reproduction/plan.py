"""The reproduction's plan: the runs of every dataset (their names, settings and order) and the
guidance swaps at matched checkpoints. Run names, swap kinds and the necessity controls are defined
here, beside the `plan` that creates them; the analysis reads them from here.

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
With the `arms` study (dql, edp), the arms that take guidance-first's two confounds apart (its critic
family, IQL against the algorithm's own critic, and its selection, IQL's beta 0.5 against the
critic's task beta):
- `<algo>-gfcritic`: guidance-first against `<algo>-joint`'s own critic, frozen at its last step (the
  same critic family and selection as joint: what differs is only that the critic is frozen and
  trained first);
- `<algo>-gfauthors`: guidance-first against the authors' stage 1 (`critic-authors`), beside the IQL
  stage 1 of `<algo>-gfdt` (with `--stage1 authors` the two are one run and this arm is not planned).
IDQL's policy never sees its critic in training, so its no-guidance and random-guidance training
controls are IDQL itself; its necessity is measured at inference only (the report says so). For
the same reason `idql-gfdt`'s policy is `idql-joint`'s bit for bit: it trains one chunk, which
checks that, and takes the rest from the joint run's snapshots (`derived.DerivedRun`; it trains
in full if the chunk differs, or with `--train-every-run`).

Then, at the last `transfer_points` evaluation steps (matched checkpoints: every run saves its
artifacts at each evaluation), guidance swaps: each policy seed with another seed's guidance of the
same step (joint) or with the independent iql-b (guidance-first); across algorithms in both
directions (the DQL policy with IDQL's IQL critic, the IDQL policy with DQL's critic, step-matched);
and K-member ensembles of iql-b (mean and min of min-Q) at the last step. With `swap_candidates`
each (policy, step) is also evaluated with its own guidance at that count and seed (an `own` cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mdpt.reproduction.protocol import Protocol, dataset_dir

CONTROLS_WITH_Q = ("dql", "edp")  # algorithms whose policy loss uses the guidance in training

# ----------------------------------------------------------------------------- run names
IQL_A, IQL_B, CRITIC_AUTHORS = "iql-a", "iql-b", "critic-authors"  # guidance runs
JOINT, GFDT, BC, RANDOM = "joint", "gfdt", "bc", "random"  # policy runs: <algo>-<role>
GF_CRITIC, GF_AUTHORS = "gfcritic", "gfauthors"  # the de-confounded guidance-first arms (`arms` study)
ARMS = (GFDT, GF_CRITIC, GF_AUTHORS)  # guidance-first with each stage-1 critic: IQL, joint's own, the authors'
BASELINE = "baseline"  # <bc|awr>-baseline: the Gaussian baselines against the stage-1 IQL guidance
BASELINES = ("bc", "awr")
METHODS = (JOINT, GFDT)  # the two training modes the paper compares


def run_name(algo: str, role: str) -> str:
    """A policy run's name: `<algo>-<role>` (role: joint, gfdt, gfcritic, gfauthors, bc, random)."""
    return f"{algo}-{role}"


def run_role(name: str) -> str | None:
    """The role of a policy run's name (None for a guidance run)."""
    role = name.rsplit("-", 1)[-1]
    return role if "-" in name and role in (JOINT, *ARMS, BC, RANDOM, BASELINE) else None


class Control(NamedTuple):
    """A necessity control: its gap is the guided joint run minus `variant` of run `<algo>-<role>`."""

    label: str
    role: str
    variant: str


NECESSITY_CONTROLS = (
    Control("inference: no guidance (plain sampling)", JOINT, "unguided"),
    Control("inference: random guidance", JOINT, "random-guidance"),
    Control("training: no guidance (eta 0), critic re-selection", BC, "guided"),
    Control("training: no guidance (eta 0), plain sampling", BC, "unguided"),
    Control("training: random frozen critic", RANDOM, "guided"),
)

# ----------------------------------------------------------------------------- swap kinds
OWN, SEED_SWAPPED, INDEPENDENT_IQL = "own", "seed-swapped", "independent-iql"
JOINT_SELECTION = "joint-selection"  # the policy selected by its own algorithm's joint critic of the same step
SPREAD_SWAPS = (SEED_SWAPPED, INDEPENDENT_IQL)  # the swaps of the paper's IQR finding
ENSEMBLE_RULES = ("mean", "min")


def cross_kind(other_algo: str) -> str:
    """The swap kind of another algorithm's joint critic of the same step."""
    return f"{run_name(other_algo, JOINT)}-guidance"


def cross_run(kind: str) -> str:
    """The run whose critic a cross-algorithm swap kind uses (`cross_kind` inverted)."""
    return kind.removesuffix("-guidance")


def ensemble_kind(k: int, rule: str) -> str:
    return f"ensemble-{k}-{rule}"


def swap_group(kind: str) -> str:
    """Which comparison a swap kind belongs to: the paper's seed spread, guidance ensembles, or cross-algorithm."""
    if kind == JOINT_SELECTION:
        return "arms"
    return "spread" if kind in SPREAD_SWAPS else "ensemble" if kind.startswith("ensemble-") else "cross"


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
    return dataset_runs / (CRITIC_AUTHORS if p.stage1 == "authors" else IQL_A) / "guidance"


def own_guidance(p: Protocol, dataset_runs: Path, run: str) -> Path:
    """The guidance a policy run (not joint: its critic is its own, per step) trained and is evaluated with."""
    algo, role = run.rsplit("-", 1)
    if role == GF_CRITIC:
        return dataset_runs / run_name(algo, JOINT) / "guidance"
    if role == GF_AUTHORS:
        return dataset_runs / CRITIC_AUTHORS / "guidance"
    return stage1_guidance(p, dataset_runs) if role == GFDT else dataset_runs / IQL_A / "guidance"


def plan(p: Protocol, runs_dir: Path) -> list[Planned]:
    """Every run of the protocol, in an order where each run's inputs come first."""
    from mdpt.experiments.derived import policy_ignores_guidance
    from mdpt.presets import merge

    out: list[Planned] = []
    necessity, transfer, arms = "necessity" in p.studies, "transfer" in p.studies, "arms" in p.studies
    for ds in p.datasets:
        common = merge(p.base, {"dataset": ds, "seeds": p.seeds, "seed": p.seed, "steps": p.steps})
        here = runs_dir / dataset_dir(ds)

        def add(name, settings, update, algo=None, after=(), derive_from=None, ds=ds, common=common):
            out.append(Planned(ds, name, merge(common, settings), update, p.steps, p.seeds, algo, tuple(after),
                               derive_from))

        add(IQL_A, {"guidance": {"kind": "iql"}}, "iql")
        for algo in BASELINES:  # what every diffusion score is read against: same data, budget and seeds
            ev = {k: v for k, v in _eval(p, ["guided"]).items() if k != "curve_candidates"}
            add(run_name(algo, BASELINE), {"algo": algo, "mode": "guidance-first", "eval": ev,
                                           "stage1": {"guidance_path": str(here / IQL_A / "guidance")}},
                BASELINE, algo, after=(IQL_A,))
        if transfer:
            add(IQL_B, {"guidance": {"kind": "iql"}, "seed": p.seed + 1000}, "iql")
        stage1 = stage1_guidance(p, here)
        if p.stage1 == "authors" or (arms and any(a in CONTROLS_WITH_Q for a in p.algos)):
            # the paper's script: next actions from an untrained actor, the target never updated
            add(CRITIC_AUTHORS, {"guidance": {"kind": "dql-critic", "tau": 0.0},
                                   "stage1": {"next_actions": "untrained"}}, "critic")
        for algo in p.algos:
            add(run_name(algo, JOINT), {"algo": algo, "mode": "joint",
                                        "eval": _eval(p, ["guided", "unguided", "random-guidance"])},
                f"{algo}-joint", algo)
            gf = {"algo": algo, "mode": "guidance-first", "eval": _eval(p, ["guided", "unguided"]),
                  "stage1": {"guidance_path": str(stage1)}}
            if p.unfreeze_at is not None:
                gf["stage1"]["unfreeze_at"] = p.unfreeze_at
            derive = run_name(algo, JOINT) if p.derive and policy_ignores_guidance(algo) else None
            add(run_name(algo, GFDT), gf, f"{algo}-gf", algo, after=(stage1.parent.name, *([derive] if derive else [])),
                derive_from=derive)
            if algo in CONTROLS_WITH_Q and necessity:
                add(run_name(algo, BC), {"algo": algo, "mode": "guidance-first", "policy": {"eta": 0.0},
                                   "eval": _eval(p, ["guided", "unguided"]),
                                   "stage1": {"guidance_path": str(here / IQL_A / "guidance")}},
                    f"{algo}-bc", algo, after=(IQL_A,))
                add(run_name(algo, RANDOM), {"algo": algo, "mode": "guidance-first", "guidance": {"kind": "dql-critic"},
                                       "eval": _eval(p, ["guided", "unguided"]),
                                       "stage1": {"guidance_path": "random"}}, f"{algo}-gf", algo)
            if algo in CONTROLS_WITH_Q and arms:
                roles = (GF_CRITIC,) if p.stage1 == "authors" else (GF_CRITIC, GF_AUTHORS)
                for role in roles:
                    source = own_guidance(p, here, run_name(algo, role))
                    add(run_name(algo, role), {"algo": algo, "mode": "guidance-first",
                                               "guidance": {"kind": "dql-critic"},
                                               "eval": _eval(p, ["guided", "unguided"]),
                                               "stage1": {"guidance_path": str(source)}},
                        f"{algo}-gf", algo, after=(source.parent.name,))
    return out


def overridden_settings(p: Protocol) -> list[str]:
    """The settings under every run (`base`: --set, --config) that the plan overrides in each of its policy
    runs: values a user gave that no run would use."""
    from mdpt.settings import flatten

    base = flatten(p.base)
    runs = [flatten(it.settings) for it in plan(p, Path("runs")) if it.algo]
    return [key for key, value in base.items() if runs and all(r.get(key, value) != value for r in runs)]


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
        """`run@step|kind`: the swap's name in out/transfer/<dataset>.json (`parse_swap_key` reads it back)."""
        return swap_key(self.run, self.step, self.kind)


def swap_key(run: str, step: int, kind: str) -> str:
    return f"{run}@{step}|{kind}"


def parse_swap_key(key: str) -> tuple[str, int, str]:
    """(run, step, kind) of a `Swap.key`."""
    run, rest = key.split("@", 1)
    step, kind = rest.split("|", 1)
    return run, int(step), kind


def eval_steps(p: Protocol) -> list[int]:
    """The steps every run evaluates (and snapshots) at: each --eval-every and the last."""
    return sorted({*range(p.eval_every, p.steps, p.eval_every), p.steps})


def planned_swaps(p: Protocol) -> list[Swap]:
    """Every guidance swap of one dataset: the `transfer` study's at the last `transfer_points` evaluation steps,
    the `arms` study's at the last step."""
    out = []
    if "arms" in p.studies:
        out += arm_swaps(p)
    if "transfer" not in p.studies:
        return out
    points = eval_steps(p)[-p.transfer_points:]
    for algo in p.algos:
        joint, gf = run_name(algo, JOINT), run_name(algo, GFDT)
        for t in points:
            if p.swap_candidates is not None:  # the comparison's own side, at the swaps' count and seed
                out += [Swap(joint, t, OWN, algo), Swap(gf, t, OWN, algo)]
            out.append(Swap(joint, t, SEED_SWAPPED, algo))
            out += [Swap(joint, t, cross_kind(other), algo) for other in p.algos if other != algo]
            out.append(Swap(gf, t, INDEPENDENT_IQL, algo))
        for run in (joint, gf):
            out += [Swap(run, points[-1], ensemble_kind(p.ensemble_k, rule), algo, p.ensemble_k, rule)
                    for rule in ENSEMBLE_RULES]
    return list({sw.key: sw for sw in out}.values())  # an own cell both studies plan is evaluated once


def arm_swaps(p: Protocol) -> list[Swap]:
    """The `arms` study's selections at the last step: each guidance-first arm and the eta-0 control also
    selected by its algorithm's joint critic at the task beta (the joint run's selection; for eta 0 the
    authors' re-selection), beside its own (an `own` cell at the swaps' candidate count when set)."""
    t, out = p.steps, []
    for algo in (a for a in p.algos if a in CONTROLS_WITH_Q):
        roles = [GFDT, GF_AUTHORS] if p.stage1 == "iql" else [GFDT]  # gfcritic's own critic is joint's at t
        if "necessity" in p.studies:
            roles.append(BC)
        for role in roles:
            run = run_name(algo, role)
            out.append(Swap(run, t, JOINT_SELECTION, algo))
            if p.swap_candidates is not None:
                out.append(Swap(run, t, OWN, algo))
        if p.swap_candidates is not None:
            out += [Swap(run_name(algo, GF_CRITIC), t, OWN, algo), Swap(run_name(algo, JOINT), t, OWN, algo)]
    return out
