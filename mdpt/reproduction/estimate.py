"""A plan's cost before it runs: training from measured update rates, evaluations from a per-episode
cost fitted to the CPU reproduction (`mdpt reproduce --budget-hours` refuses a plan over budget)."""

from __future__ import annotations

from mdpt.reproduction.plan import BASELINES, Planned, Swap, eval_steps
from mdpt.reproduction.protocol import Protocol

# Estimated seed-steps per second of each update on a 2-core CPU and on an H200 at 15-20 replicas
# (benchmarks/RESULTS.md); only used to estimate a plan's wall time.
RATES = {"cpu": {"iql": 240.0, "dql-joint": 48.0, "dql-gf": 60.0, "idql-joint": 30.0, "idql-gf": 35.0,
                 "edp-joint": 50.0, "edp-gf": 150.0, "dql-bc": 150.0, "edp-bc": 150.0, "critic": 60.0,
                 "baseline": 1000.0},
         "gpu": {"iql": 47_000.0, "dql-joint": 15_000.0, "dql-gf": 18_000.0, "idql-joint": 16_000.0,
                 "idql-gf": 22_000.0, "edp-joint": 17_000.0, "edp-gf": 60_000.0, "dql-bc": 40_000.0,
                 "edp-bc": 40_000.0, "critic": 15_000.0, "baseline": 200_000.0}}


# Evaluation on a 2-core CPU, seconds per episode of one seed (1000 env steps): the simulator and one
# sample, plus one denoising chain per candidate. Fitted to the hopper reproduction: DQL 63 s for
# 3 seeds x 10 episodes at 50 candidates; IDQL (LN-ResNet) 1776 s at 256 candidates, 90-110 s for
# 3 x 5 at 32. EDP samples with 15 solver steps, three times DQL's 5.
EPISODE_COST = {"dql": (1.0, 0.025), "edp": (1.0, 0.075), "idql": (1.5, 0.235), "cfg": (1.0, 0.025),
                "bc": (1.0, 0.0), "awr": (1.0, 0.0)}  # the baselines: one small MLP call per step


def _episode_seconds(algo: str, candidates: int, episodes: int, seeds: int) -> float:
    fixed, per_candidate = EPISODE_COST[algo]
    return episodes * seeds * (fixed + per_candidate * candidates)


def _candidates(p: Protocol, algo: str, step: int, guided: bool) -> int:
    from mdpt.presets import ALGORITHMS

    if not guided:
        return 1
    if step < p.steps and p.curve_candidates is not None and algo not in BASELINES:
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
