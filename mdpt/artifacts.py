"""Saved guidance modules and policies: a directory with `params.safetensors` and `meta.json`.

Parameters carry a leading seed axis (S seeds trained in one program are saved together; pick
one with `seed_index`). Metadata records the kind, config, sizes, seeds, steps, training mode,
normalizer, dataset id and fingerprint, package and format versions, and the sha256 of the
parameter file. A directory is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from mdpt import __version__
from mdpt.data.normalizer import Normalizer
from mdpt.errors import MDPTError
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.io import flatten_tree, load_params, read_json, save_params, write_json_atomic
from mdpt.policies.module import DiffusionPolicy, PolicyConfig

FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
META_FILE = "meta.json"


@dataclass
class Artifact:
    """A loaded module with stacked per-seed parameters."""

    module: GuidanceModule | DiffusionPolicy
    params: dict  # leading axis = seeds
    normalizer: Normalizer
    meta: dict
    path: Path | None = None
    records: dict = field(default_factory=dict)

    @property
    def num_seeds(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("dataset", {}).get("fingerprint")

    def select(self, seed_index: int | None) -> Artifact:
        """Keep one seed (still with a seed axis of size 1), or all when None."""
        if seed_index is None:
            return self
        if not 0 <= seed_index < self.num_seeds:
            raise MDPTError(f"{self.path}: seed index {seed_index} out of range; it holds {self.num_seeds} seeds")
        params = jax.tree.map(lambda x: x[seed_index : seed_index + 1], self.params)
        meta = {**self.meta, "seeds": [self.meta["seeds"][seed_index]]}
        return Artifact(self.module, params, self.normalizer, meta, self.path, self.records)


def dataset_record(dataset) -> dict:
    return {"id": dataset.dataset_id, "fingerprint": dataset.fingerprint, "env_id": dataset.env.env_id,
            "source": str(dataset.source), "transitions": len(dataset)}


def save_artifact(out_dir: str | os.PathLike, art_type: str, module, params: dict, normalizer: Normalizer,
                  dataset_rec: dict, seeds: list[int], steps: int, extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        digest = save_params(tmp / PARAMS_FILE, jax.device_get(params))
        meta = {
            "format_version": FORMAT_VERSION,
            "type": art_type,
            "kind": module.kind if art_type == "guidance" else module.algo,
            "config": module.config.to_json(),
            "obs_dim": module.obs_dim,
            "act_dim": module.act_dim,
            "seeds": [int(s) for s in seeds],
            "steps": int(steps),
            "normalizer": normalizer.to_json(),
            "dataset": dataset_rec,
            "mdpt_version": __version__,
            "files": {PARAMS_FILE: digest},
            **(extra or {}),
        }
        write_json_atomic(tmp / META_FILE, meta)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def read_meta(path: str | os.PathLike, expected_type: str) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise MDPTError(f"{path}: no such {expected_type} directory")
    meta = read_json(path / META_FILE, f"{expected_type} metadata")
    if not isinstance(meta, dict):
        raise MDPTError(f"{path / META_FILE}: metadata is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise MDPTError(f"{path / META_FILE}: missing format_version; not an MDPT artifact")
    if version > FORMAT_VERSION:
        raise MDPTError(f"{path}: written with artifact format {version} (mdpt {meta.get('mdpt_version', '?')}); "
                        f"this mdpt reads format <= {FORMAT_VERSION}: upgrade mdpt to "
                        f">= {meta.get('mdpt_version', 'that version')}")
    if meta.get("type") != expected_type:
        raise MDPTError(f"{path}: this is a {meta.get('type')!r} artifact, expected a {expected_type}")
    return meta


def _load(path: str | os.PathLike, expected_type: str, build) -> Artifact:
    path = Path(path)
    meta = read_meta(path, expected_type)
    try:
        module = build(meta)
        normalizer = Normalizer.from_json(meta["normalizer"])
        digest = meta["files"][PARAMS_FILE]
    except (KeyError, TypeError, ValueError) as e:
        raise MDPTError(f"{path / META_FILE}: incomplete or invalid metadata ({e.__class__.__name__}: {e})") from None
    params = load_params(path / PARAMS_FILE, digest)
    _check_shapes(path, module, params, len(meta.get("seeds", [])))
    return Artifact(module, params, normalizer, meta, path)


def _check_shapes(path: Path, module, params: dict, num_seeds: int) -> None:
    init_fn = module.init
    template = jax.eval_shape(init_fn, jax.random.PRNGKey(0))["params"]
    want = {k: tuple(v.shape) for k, v in flatten_tree(template).items()}
    got = {k: tuple(v.shape[1:]) for k, v in flatten_tree(params).items()}
    if want != got:
        bad = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got.get(k)]
        raise MDPTError(f"{path}: parameters do not match the recorded architecture (first mismatch: {bad[0]}); "
                        "the artifact is corrupt or from another version")
    seeds = {v.shape[0] for v in flatten_tree(params).values()}
    if seeds != {num_seeds}:
        raise MDPTError(f"{path}: parameters hold {sorted(seeds)} seeds but metadata lists {num_seeds}")


def load_guidance(path: str | os.PathLike, seed_index: int | None = None) -> Artifact:
    def build(meta):
        return GuidanceModule(GuidanceConfig(**meta["config"]), meta["obs_dim"], meta["act_dim"])

    return _load(path, "guidance", build).select(seed_index)


def load_policy(path: str | os.PathLike, seed_index: int | None = None) -> Artifact:
    def build(meta):
        return DiffusionPolicy(PolicyConfig.from_json(meta["config"]), meta["obs_dim"], meta["act_dim"])

    return _load(path, "policy", build).select(seed_index)


def check_compatible(policy: Artifact, guidance: Artifact, allow_mismatch: bool = False) -> dict:
    """Refuse a pair with different sizes always, and different data unless overridden.

    Returns the record to store with results: {'guidance': path, 'mismatch_override': bool}.
    """
    p, g = policy.module, guidance.module
    if (p.obs_dim, p.act_dim) != (g.obs_dim, g.act_dim):
        raise MDPTError(f"guidance {guidance.path} has obs/act sizes {g.obs_dim}/{g.act_dim} but policy "
                        f"{policy.path} has {p.obs_dim}/{p.act_dim}; they belong to different environments")
    same = policy.fingerprint == guidance.fingerprint
    if not same and not allow_mismatch:
        raise MDPTError(f"guidance {guidance.path} was trained on data {guidance.fingerprint} but policy "
                        f"{policy.path} on {policy.fingerprint}; pass --allow-data-mismatch to combine them anyway")
    return {"guidance": str(guidance.path), "guidance_fingerprint": guidance.fingerprint,
            "mismatch_override": not same}


def stack_params(param_list: list[dict]) -> dict:
    return jax.tree.map(lambda *xs: np.stack(xs), *param_list)
