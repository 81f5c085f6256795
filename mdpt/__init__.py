"""MDPT: Modular Diffusion Policy Training.

Guidance (value estimators) and diffusion policies are separate modules that can be trained
jointly or guidance-first, saved apart and recombined at inference.

    import mdpt

    config = mdpt.RunConfig.from_dict({"dataset": "bullet-hopper-medium-v0", "algo": "dql",
                                        "mode": "guidance-first", "steps": 20000, "seeds": 4})
    summary = mdpt.train(config, "runs/gf-dql")          # presets for (algo, dataset) applied
    result = mdpt.evaluate("runs/gf-dql/policy", "other-run/guidance", episodes=10)
    agent = mdpt.Agent(mdpt.load_policy("runs/gf-dql"), mdpt.load_guidance("other-run"),
                       mdpt.SelectorConfig())              # unset fields: the modules' own presets

The names below load lazily, so `import mdpt` (and the command line's start) stays fast.
"""

from __future__ import annotations

__version__ = "0.2.0"

_EXPORTS = {
    "RunConfig": "mdpt.experiments.config",
    "resolve_config": "mdpt.experiments.config",
    "load_config": "mdpt.experiments.config",
    "PolicyConfig": "mdpt.policies.module",
    "GuidanceConfig": "mdpt.guidance.module",
    "SelectorConfig": "mdpt.agent",
    "Agent": "mdpt.agent",
    "load_policy": "mdpt.artifacts",
    "load_guidance": "mdpt.artifacts",
    "evaluate": "mdpt.evaluation.api",
    "load_dataset": "mdpt.data.load",
    "MDPTError": "mdpt.errors",
}
__all__ = ["train", "__version__", *_EXPORTS]


def train(config, out, *, resume: bool = False, progress: bool = True, log=None) -> dict:
    """Train one run (a policy, or a guidance module alone when `config.algo` is None) into the
    directory `out`; `config` is a RunConfig or a mapping of settings (presets applied). Returns
    the run's summary (also in out/summary.json). Messages go to `log`, else to the `mdpt` logger."""
    from mdpt.experiments.config import RunConfig, resolve_config
    from mdpt.experiments.runner import Run

    if not isinstance(config, RunConfig):
        config = resolve_config(config)
    return Run(out, config, resume=resume, progress=progress, log=log).execute()


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mdpt' has no attribute {name!r}")
