"""Saved guidance modules and policies: a directory with `params.safetensors` and `meta.json`.

Parameters carry a leading seed axis (S seeds trained in one program are saved together; pick
one with `seed_index`). Metadata records the kind, config, sizes, seeds, steps, training mode,
normalizer, dataset id and fingerprint, package and format versions, and the sha256 of the
parameter file. A directory is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from mdpt import __version__
from mdpt import io as mio
from mdpt.data.normalizer import Normalizer
from mdpt.errors import MDPTError
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.io import flatten_tree, load_params, read_json, save_params, write_json_atomic
from mdpt.policies.module import DiffusionPolicy, PolicyConfig, make_policy
from mdpt.settings import shown

FORMAT_VERSION = 1
PARAMS_FILE = "params.safetensors"
META_FILE = "meta.json"
META_DIGEST = "meta_sha256"  # sha256 of the canonical JSON of every other metadata field


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
    def seeds(self) -> list[int]:
        """The training seed of each parameter slice (saved artifacts record them; else 0..S-1)."""
        return [int(x) for x in self.meta.get("seeds", range(self.num_seeds))]

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("dataset", {}).get("fingerprint")

    def select(self, seed_index: int | None) -> Artifact:
        """Keep one seed (still with a seed axis of size 1), or all when None."""
        if seed_index is None:
            return self
        if isinstance(seed_index, bool) or not isinstance(seed_index, numbers.Integral) \
                or not 0 <= seed_index < self.num_seeds:
            raise MDPTError(f"{self.path}: seed index {shown(seed_index)} out of range; it holds {self.num_seeds} seeds "
                            f"(0..{self.num_seeds - 1})")
        params = jax.tree.map(lambda x: x[seed_index : seed_index + 1], self.params)
        meta = {**self.meta, "seeds": [self.seeds[seed_index]]}
        return Artifact(self.module, params, self.normalizer, meta, self.path, self.records)


def dataset_record(dataset) -> dict:
    return {"id": dataset.dataset_id, "fingerprint": dataset.fingerprint, "env_id": dataset.env.env_id,
            "source": str(dataset.source), "transitions": len(dataset)}


def save_artifact(out_dir: str | os.PathLike, art_type: str, module, params: dict, normalizer: Normalizer,
                  dataset_rec: dict, seeds: list[int], steps: int, extra: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    with mio.atomic_dir(out_dir) as tmp:
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
        meta = json.loads(json.dumps(meta, default=mio.json_default))  # exactly what a reader will see
        meta[META_DIGEST] = meta_digest(meta)
        write_json_atomic(tmp / META_FILE, meta)
    return out_dir


def meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != META_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_meta(path: str | os.PathLike, expected_type: str) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise MDPTError(f"{path}: no such {expected_type} directory")
    meta = read_json(path / META_FILE, f"{expected_type} metadata")
    if not isinstance(meta, dict):
        raise MDPTError(f"{path / META_FILE}: metadata is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MDPTError(f"{path / META_FILE}: missing format_version; not an MDPT artifact")
    if version > FORMAT_VERSION:
        raise MDPTError(f"{path}: written with artifact format {version} (mdpt {meta.get('mdpt_version', '?')}); "
                        f"this mdpt reads format <= {FORMAT_VERSION}: upgrade mdpt to "
                        f">= {meta.get('mdpt_version', 'that version')}")
    if META_DIGEST in meta and meta[META_DIGEST] != meta_digest(meta):
        raise MDPTError(f"{path / META_FILE}: checksum mismatch; the metadata was altered or damaged, "
                        "retrain or restore the artifact")
    if meta.get("type") != expected_type:
        raise MDPTError(f"{path}: this is a {meta.get('type')!r} artifact, expected a {expected_type}")
    _check_meta_fields(path / META_FILE, meta)
    return meta


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_meta_fields(where: Path, meta: dict) -> None:
    """Types of the fields a loader relies on (metadata is data: nothing in it is ever executed)."""
    checks = [
        ("config", isinstance(meta.get("config"), dict)),
        ("obs_dim", _is_int(meta.get("obs_dim")) and 0 < meta["obs_dim"] <= 1 << 16),
        ("act_dim", _is_int(meta.get("act_dim")) and 0 < meta["act_dim"] <= 1 << 16),
        ("seeds", isinstance(meta.get("seeds"), list) and len(meta["seeds"]) > 0
         and all(_is_int(x) for x in meta["seeds"])),
        ("normalizer", isinstance(meta.get("normalizer"), dict)),
        ("files", isinstance(meta.get("files"), dict) and isinstance(meta["files"].get(PARAMS_FILE), str)),
    ]
    if "dataset" in meta:
        checks.append(("dataset", isinstance(meta["dataset"], dict)))
    bad = [name for name, ok in checks if not ok]
    if bad:
        raise MDPTError(f"{where}: invalid or missing metadata field {bad[0]!r}; the artifact is corrupt")


def resolve_artifact_dir(path: str | os.PathLike, expected_type: str) -> Path:
    """Accept the artifact directory itself or a run directory holding it (`RUN/policy`, `RUN/guidance`)."""
    path = Path(path)
    if not (path / META_FILE).exists() and (path / expected_type / META_FILE).exists():
        return path / expected_type
    return path


def _load(path: str | os.PathLike, expected_type: str, build) -> Artifact:
    path = resolve_artifact_dir(path, expected_type)
    meta = read_meta(path, expected_type)
    try:
        module = build(meta)
        normalizer = Normalizer.from_json(meta["normalizer"])
        if normalizer.obs_mean.shape != (module.obs_dim,) or normalizer.obs_std.shape != (module.obs_dim,):
            raise ValueError(f"normalizer sizes do not match obs_dim {module.obs_dim}")
        digest = meta["files"][PARAMS_FILE]
    except MDPTError as e:
        raise MDPTError(f"{path / META_FILE}: invalid metadata: {e}") from None
    except Exception as e:  # any malformed value: the artifact is corrupt, never a crash
        msg = " ".join(str(e).split())[:200]
        raise MDPTError(f"{path / META_FILE}: incomplete or invalid metadata ({e.__class__.__name__}: {msg})") from None
    _check_env(path, meta)
    params = load_params(path / PARAMS_FILE, digest)
    _check_shapes(path, module, params, len(meta["seeds"]))
    return Artifact(module, params, normalizer, meta, path)


def _check_env(path: Path, meta: dict) -> None:
    """The environment the metadata names has the sizes its parameters were built for (else evaluation
    would fail deep inside JAX, or step the wrong simulator)."""
    from mdpt.data.registry import ENVS

    env_id = (meta.get("dataset") or {}).get("env_id")
    spec = next((e for e in ENVS.values() if env_id in (e.name, e.env_id)), None) if isinstance(env_id, str) else None
    if spec is not None and (spec.obs_dim, spec.act_dim) != (meta["obs_dim"], meta["act_dim"]):
        raise MDPTError(f"{path / META_FILE}: names the environment {env_id} (obs {spec.obs_dim}, act {spec.act_dim}) "
                        f"but its parameters are for obs {meta['obs_dim']}, act {meta['act_dim']}; the artifact is "
                        "corrupt or was edited")


def _check_shapes(path: Path, module, params: dict, num_seeds: int) -> None:
    try:
        template = jax.eval_shape(module.init, jax.random.PRNGKey(0))["params"]
    except Exception as e:  # a config the code cannot build: corrupt metadata, not a crash
        raise MDPTError(f"{path / META_FILE}: the recorded architecture cannot be built ({e.__class__.__name__}); "
                        "the artifact is corrupt or from another version") from None
    if isinstance(module, GuidanceModule) and "target_q" in params:  # saved since format 1.1
        template = {**template, "target_q": template["q"]}
    want = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flatten_tree(template).items()}
    got = {k: (tuple(v.shape[1:]), v.dtype) for k, v in flatten_tree(params).items()}
    if want != got:
        bad = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got.get(k)]
        raise MDPTError(f"{path}: parameters do not match the recorded architecture (first mismatch: {bad[0]}); "
                        "the artifact is corrupt or from another version")
    seeds = {v.shape[0] for v in flatten_tree(params).values()}
    if seeds != {num_seeds}:
        raise MDPTError(f"{path}: parameters hold {sorted(seeds)} seeds but metadata lists {num_seeds}")


def load_guidance(path: str | os.PathLike, seed_index: int | None = None) -> Artifact:
    def build(meta):
        return GuidanceModule(GuidanceConfig.from_json(meta["config"]), meta["obs_dim"], meta["act_dim"])

    return _load(path, "guidance", build).select(seed_index)


def load_policy(path: str | os.PathLike, seed_index: int | None = None) -> Artifact:
    def build(meta):
        return make_policy(PolicyConfig.from_json(meta["config"]), meta["obs_dim"], meta["act_dim"])

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
