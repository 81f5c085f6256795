"""Artifacts are written atomically, carry checksums, and a damaged, altered, foreign or newer
artifact is refused with one line naming the file. Loading reads safetensors and JSON only:
nothing in an artifact is ever executed."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mdpt.artifacts as artifacts
import mdpt.io
from mdpt.artifacts import META_FILE, PARAMS_FILE, dataset_record, load_guidance, load_policy, save_artifact
from mdpt.data.normalizer import Normalizer
from mdpt.errors import MDPTError
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.io import sha256_file, write_json_atomic
from mdpt.policies.module import DiffusionPolicy, PolicyConfig

FUZZ_CASES = {"meta": 0}


def stray(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if ".mdpt-tmp-" in p.name or ".mdpt-old-" in p.name]


def seeds_params(module, n=2):
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    return jax.device_get(jax.vmap(lambda k: module.init(k)["params"])(keys))


@pytest.fixture
def guidance_dir(tmp_path, tiny_dataset) -> Path:
    module = GuidanceModule(GuidanceConfig(kind="iql", hidden=16, depth=1).resolved(), 15, 3)
    return save_artifact(tmp_path / "guidance", "guidance", module, seeds_params(module),
                         Normalizer.fit(tiny_dataset), dataset_record(tiny_dataset), [0, 1], 10)


def rewrite_meta(d: Path, change, reseal: bool = True) -> None:
    """Edit meta.json; reseal: recompute its checksum (a deliberate edit, not damage)."""
    meta = json.loads((d / META_FILE).read_text())
    change(meta)
    if reseal and isinstance(meta, dict):
        meta[artifacts.META_DIGEST] = artifacts.meta_digest(meta)
    (d / META_FILE).write_text(json.dumps(meta))


def refused(d: Path, file: str, match: str = "", loader=load_guidance) -> str:
    with pytest.raises(MDPTError) as e:
        loader(d)
    msg = str(e.value)
    assert "\n" not in msg and str(d / file) in msg and match in msg, msg
    return msg


def test_round_trip_records_checksums_and_writes_atomically(guidance_dir, tiny_dataset):
    meta = json.loads((guidance_dir / META_FILE).read_text())
    assert meta["files"][PARAMS_FILE] == sha256_file(guidance_dir / PARAMS_FILE)
    assert meta[artifacts.META_DIGEST] == artifacts.meta_digest(meta)
    art = load_guidance(guidance_dir)
    assert art.num_seeds == 2 and art.fingerprint == tiny_dataset.fingerprint
    want = 0o666 & ~mdpt.io._umask()
    assert (guidance_dir / PARAMS_FILE).stat().st_mode & 0o777 == want  # not mkstemp's 0600
    assert (guidance_dir / META_FILE).stat().st_mode & 0o777 == want
    assert guidance_dir.stat().st_mode & 0o777 == 0o777 & ~mdpt.io._umask()  # not mkdtemp's 0700
    assert not stray(guidance_dir.parent)


def test_policy_round_trip(tmp_path, tiny_dataset):
    module = DiffusionPolicy(PolicyConfig(algo="dql", hidden=16, depth=1, T=5).resolved(), 15, 3)
    params = seeds_params(module, 1)
    d = save_artifact(tmp_path / "policy", "policy", module, params, Normalizer.fit(tiny_dataset),
                      dataset_record(tiny_dataset), [3], 10)
    art = load_policy(d)
    for a, b in zip(jax.tree.leaves(art.params), jax.tree.leaves(params), strict=True):
        assert np.array_equal(a, b)
    refused(d, "", "this is a 'policy' artifact, expected a guidance")


PARAM_DAMAGE = {
    "truncated": lambda b: b[: len(b) // 2],
    "one byte flipped": lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:],
    "bytes appended": lambda b: b + b"\0" * 8,
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("damage", PARAM_DAMAGE)
def test_damaged_params_are_refused(guidance_dir, damage):
    p = guidance_dir / PARAMS_FILE
    p.write_bytes(PARAM_DAMAGE[damage](p.read_bytes()))
    refused(guidance_dir, PARAMS_FILE, "checksum mismatch")


def test_missing_params_are_refused(guidance_dir):
    (guidance_dir / PARAMS_FILE).unlink()
    refused(guidance_dir, PARAMS_FILE, "not found")


class Trap:
    """Unpickling this would create MARKER: proof that nothing unpickles an artifact."""

    MARKER: Path | None = None

    def __reduce__(self):
        return (Path.touch, (self.MARKER,))


@pytest.mark.parametrize("reseal", [False, True])
def test_pickle_instead_of_safetensors_is_refused_and_never_run(guidance_dir, tmp_path, reseal):
    marker = tmp_path / "pwned"
    Trap.MARKER = marker
    data = pickle.dumps({"params": Trap()})
    (guidance_dir / PARAMS_FILE).write_bytes(data)
    if reseal:  # even with checksums made to match, the file must parse as safetensors
        import hashlib

        rewrite_meta(guidance_dir, lambda m: m["files"].update({PARAMS_FILE: hashlib.sha256(data).hexdigest()}))
    refused(guidance_dir, PARAMS_FILE, "not a valid safetensors file" if reseal else "checksum mismatch")
    assert not marker.exists()


META_DAMAGE = {
    "truncated": (lambda d: (d / META_FILE).write_bytes((d / META_FILE).read_bytes()[:100]), "not valid JSON"),
    "not UTF-8": (lambda d: (d / META_FILE).write_bytes(b"\xff\xfe{"), "not valid JSON"),
    "value altered": (lambda d: rewrite_meta(d, lambda m: m["normalizer"].update(reward_scale=2.0), reseal=False),
                      "checksum mismatch"),
    "a JSON list": (lambda d: (d / META_FILE).write_text("[1, 2]"), "not a JSON object"),
    "deleted": (lambda d: (d / META_FILE).unlink(), "not found"),
    "pickle": (lambda d: (d / META_FILE).write_bytes(pickle.dumps({"a": 1})), "not valid JSON"),
}


@pytest.mark.parametrize("damage", META_DAMAGE)
def test_damaged_meta_is_refused(guidance_dir, damage):
    action, match = META_DAMAGE[damage]
    action(guidance_dir)
    refused(guidance_dir, META_FILE, match)


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(config={"kind": "iql", "hidden": 16, "depth": 1, "__class__": "os.system"}), "invalid metadata"),
    (lambda m: m.update(config="import os; os.system('true')"), "'config'"),
    (lambda m: m.update(obs_dim="15"), "'obs_dim'"),
    (lambda m: m.update(obs_dim=16), "invalid metadata"),  # normalizer has 15 entries
    (lambda m: m["config"].update(hidden=32), "do not match the recorded architecture"),
    (lambda m: m.update(seeds=[0]), "hold [2] seeds but metadata lists 1"),
    (lambda m: m.pop("files"), "'files'"),
    (lambda m: m["dataset"].update(env_id="HalfCheetahBulletEnv-v0"),  # evaluation would fail inside JAX
     "names the environment HalfCheetahBulletEnv-v0 (obs 26, act 6) but its parameters are for obs 15, act 3"),
])
def test_meta_with_unexpected_content_is_refused(guidance_dir, change, match):
    rewrite_meta(guidance_dir, change)
    msg = refused(guidance_dir, "", match)
    assert str(guidance_dir) in msg


def test_newer_format_version_names_the_version_that_reads_it(guidance_dir):
    rewrite_meta(guidance_dir, lambda m: m.update(format_version=artifacts.FORMAT_VERSION + 1, mdpt_version="9.3.0"))
    msg = refused(guidance_dir, "", "upgrade mdpt to >= 9.3.0")
    assert f"format {artifacts.FORMAT_VERSION + 1}" in msg and f"reads format <= {artifacts.FORMAT_VERSION}" in msg


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                               max_size=3), max_leaves=6)


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_meta_is_loaded_or_refused_never_crashes(guidance_dir, data):
    """Random values for random metadata fields (resealed, so every check past the checksum runs)."""
    original = (guidance_dir / META_FILE).read_text()
    meta = json.loads(original)
    edited = copy.deepcopy(meta)
    nested = {"config": list(meta["config"]), "normalizer": list(meta["normalizer"]), "dataset": list(meta["dataset"])}
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(k for k in meta if k != artifacts.META_DIGEST)))
        if key in nested and data.draw(st.booleans()):
            edited[key] = dict(edited[key]) if isinstance(edited.get(key), dict) else {}
            edited[key][data.draw(st.sampled_from(nested[key]))] = data.draw(JSON)
        elif data.draw(st.booleans()):
            edited.pop(key, None)
        else:
            edited[key] = data.draw(JSON)
    try:
        rewrite_meta(guidance_dir, lambda m: (m.clear(), m.update(edited)))
        FUZZ_CASES["meta"] += 1
        try:
            load_guidance(guidance_dir)
        except MDPTError as e:
            assert "\n" not in str(e)
    finally:
        (guidance_dir / META_FILE).write_text(original)


def test_fuzz_count():
    print(f"\nmeta.json fuzz cases run: {FUZZ_CASES['meta']}")


def test_failed_save_leaves_previous_artifact_and_no_temporaries(guidance_dir, tiny_dataset, monkeypatch):
    before = {p.name: p.read_bytes() for p in guidance_dir.iterdir()}
    module = GuidanceModule(GuidanceConfig(kind="iql", hidden=16, depth=1).resolved(), 15, 3)
    params = seeds_params(module)

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts, "write_json_atomic", fail)  # dies after params were written to the temp dir
    with pytest.raises(OSError):
        save_artifact(guidance_dir, "guidance", module, params, Normalizer.fit(tiny_dataset),
                      dataset_record(tiny_dataset), [5, 6], 10)
    assert {p.name: p.read_bytes() for p in guidance_dir.iterdir()} == before
    assert not stray(guidance_dir.parent)
    load_guidance(guidance_dir)


def test_failed_atomic_write_keeps_old_file_and_no_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
