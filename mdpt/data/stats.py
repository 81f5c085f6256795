"""Dataset statistics: what `mdpt data info` shows, as data."""

from __future__ import annotations

from mdpt.data.dataset import Dataset
from mdpt.data.registry import available_reference, reference_bounds

SUMMARY_ATTRS = ("recipe", "ref_min_score", "ref_max_score", "medium_checkpoint", "expert_checkpoint",
                 "concatenation_of")


def dataset_summary(data: Dataset, reference: str = "d4rl") -> dict:
    """Size, episodes, return statistics, normalized scores (`reference`: "d4rl", "dataset" or "raw"; one the data
    lacks is replaced as `registry.available_reference` says, and the one used is recorded), fingerprint, loading notes and recipe attributes of `data`, as a
    JSON-ready dict (what `mdpt data info` prints)."""
    stats = data.return_stats()
    reference = available_reference(data.env, reference, data.attrs)
    lo, hi = reference_bounds(data.env, reference, data.attrs)

    def norm(x):
        return 100.0 * (x - lo) / (hi - lo)

    lengths = [s.stop - s.start for s in data.episode_slices]
    attrs = {k: data.attrs[k] for k in SUMMARY_ATTRS if k in data.attrs}
    return {
        "dataset_id": data.dataset_id,
        "source": data.source,
        "env_id": data.env.env_id,
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "transitions": len(data),
        "episodes": stats["episodes"],
        "terminals": int(data.terminals.sum()),
        "timeouts": int(data.timeouts.sum()),
        "episode_length": {"mean": float(sum(lengths) / len(lengths)), "min": min(lengths), "max": max(lengths)},
        "return": {k: stats[k] for k in ("mean", "std", "min", "max")},
        "normalized": {"reference": reference, "min_score": lo, "max_score": hi,
                       "mean": norm(stats["mean"]), "min": norm(stats["min"]), "max": norm(stats["max"])},
        "fingerprint": data.fingerprint,
        "notes": list(data.notes),
        "attrs": attrs,
    }
