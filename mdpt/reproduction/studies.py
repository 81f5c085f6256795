"""The paper's three studies, one command each (`mdpt study necessity|gfdt-vs-joint|transfer|arms`).

A study is `mdpt reproduce` (reproduction/execute.py) on one dataset restricted to that study's
runs: `necessity` trains the joint and guidance-first policies and the eta-0 and random-critic
controls; `gfdt-vs-joint` the joint and guidance-first policies against the stage-1 guidance;
`transfer` those plus an independent guidance and the step-matched swaps; `arms` those plus
guidance-first against the joint run's own critic and against the authors' stage 1, each also
selected the joint run's way. The layout and the
report are the reproduction's (out/runs/<dataset>/<run>/, out/transfer/, out/report/); a second
call resumes. `run_all` trains named configs one after the other (the quickstart's runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.reproduction.protocol import STUDIES

LOG = logging.getLogger("mdpt")


def make_config(dataset: str, settings: dict, overrides: dict | None = None, sets: list[str] | None = None):
    """RunConfig from study settings over a base mapping (e.g. --config) and `--set key=value` items."""
    from mdpt.experiments.config import load_config

    return load_config(sets=sets, base={"dataset": dataset, **(overrides or {})}, top=settings)


def run_all(configs: dict[str, object], runs_dir: Path, log: Callable | None = None, progress: bool = True,
            dataset=None) -> dict[str, dict]:
    """Run (or resume) each named config in runs_dir/<name>; returns name -> summary.

    Evaluation episodes are capped by each config's `eval_max_steps`.
    """
    log = log or LOG.info
    from mdpt.experiments.runner import Run

    summaries = {}
    for i, (name, config) in enumerate(configs.items(), 1):
        log(f"[{i}/{len(configs)}] training {name} ({config.algo or config.guidance_kind}, "
            f"{config.mode if config.algo else 'guidance'}, {config.steps} steps, {config.seeds} seed(s))")
        run = Run(runs_dir / name, config, resume=True, progress=progress, log=log, dataset=dataset)
        summaries[name] = run.execute()
        if dataset is None:
            dataset = getattr(run, "dataset", None)
    return summaries


def parse_algos(algos) -> list[str]:
    from mdpt.policies.module import POLICY_ALGOS

    out = [a.strip() for a in (algos.split(",") if isinstance(algos, str) else algos) if a.strip()]
    if not out:
        raise MDPTError("no algorithms given; pass e.g. --algos dql,idql")
    for a in out:
        if a not in POLICY_ALGOS:
            raise MDPTError(f"unknown algo {a!r}; use any of: {', '.join(POLICY_ALGOS)}")
    return out


@dataclass
class StudyOptions:
    dataset: str
    out: Path
    algos: list[str]
    steps: int = 100_000
    seeds: int = 3
    eval_every: int = 0
    eval_episodes: int = 10
    overrides: dict | None = None  # settings under every run (e.g. from a YAML file)
    sets: tuple[str, ...] = ()
    eval_max_steps: int | None = None
    allow_data_mismatch: bool = False
    progress: bool = True
    stage1: str = "iql"
    unfreeze_at: int | None = None

    def protocol(self, study: str):
        """The reproduction protocol restricted to one study on one dataset."""
        from mdpt import presets
        from mdpt.experiments.config import RunConfig, apply_overrides
        from mdpt.reproduction.protocol import Protocol
        from mdpt.settings import unalias

        base = presets.merge(unalias(RunConfig, dict(self.overrides or {}), "--config"),
                             unalias(RunConfig, apply_overrides({}, self.sets), "--set"))
        if self.allow_data_mismatch:
            base["allow_data_mismatch"] = True
        every = self.eval_every or self.steps
        return Protocol(datasets=(self.dataset,), algos=tuple(self.algos), seeds=self.seeds, steps=self.steps,
                        eval_every=min(every, self.steps), curve_episodes=self.eval_episodes,
                        final_episodes=self.eval_episodes, eval_max_steps=self.eval_max_steps, stage1=self.stage1,
                        unfreeze_at=self.unfreeze_at, ensemble_k=min(3, self.seeds), studies=(study,),
                        base=base).validate()


def run_study(name: str, o: StudyOptions, log: Callable | None = None) -> Path:
    """One of the paper's studies on one dataset: the reproduction's protocol restricted to the
    runs (and guidance swaps) that study needs, with the same report."""
    log = log or LOG.info
    from mdpt.evaluation.api import MAX_EPISODES
    from mdpt.reproduction.execute import Reproduction
    from mdpt.settings import check_count

    if name not in STUDIES:
        raise MDPTError(f"unknown study {name!r}; use one of: {', '.join(STUDIES)}")
    if o.seeds < 1 or o.steps < 1:
        raise MDPTError("--steps and --seeds must be >= 1")
    check_count(o.eval_episodes, "--eval-episodes", 1, MAX_EPISODES)  # the protocol would name reproduce's flag
    return Reproduction(o.protocol(name), o.out, log=log, progress=o.progress).execute()
