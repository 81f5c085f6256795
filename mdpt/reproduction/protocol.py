"""The reproduction's protocol as a value: what `mdpt reproduce` runs, saved in protocol.json
(`to_json`/`from_json`), its command line rebuilt in one place (`command_line`), and the defaults
of the command's flags (`cli/reproduce_cmd.py` reads them from the fields)."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.io import read_json
from mdpt.settings import flatten

STUDIES = ("necessity", "gfdt-vs-joint", "transfer", "arms")


STAGE1 = ("iql", "authors")


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
    shards: tuple = ()  # ((seed, seeds), ...) of the shards a merged reproduction joined (`merge.py`); () one run

    def validate(self) -> Protocol:
        from mdpt.policies.module import POLICY_ALGOS

        if not self.datasets:
            raise MDPTError("no datasets: pass --datasets ID,... (or 'all' with datasets in the data directory)")
        for name, values in (("--datasets", self.datasets), ("--algos", self.algos), ("--studies", self.studies)):
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
        return self

    def to_json(self) -> dict:
        """The protocol as protocol.json stores it (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> Protocol:
        """A protocol from protocol.json; keys added since it was written take their defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise MDPTError(f"protocol.json: unknown key(s) {', '.join(unknown)}; written by a newer mdpt?")
        values = {k: tuple(v) if names[k].type.startswith("tuple") else v for k, v in d.items()}
        if "shards" in values:
            values["shards"] = tuple(tuple(int(x) for x in pair) for pair in values["shards"])
        return cls(**values)

    def command_line(self, out: str | Path) -> str:
        """The `mdpt reproduce` call that makes this protocol in `out` (as given: the report prints it); for
        a merged reproduction, each shard's call (into OUT-seeds-A-B) and the merge, joined by `&&`."""
        if self.shards:
            parts = [f"{out}-seeds-{a}-{a + n - 1}" for a, n in self.shards]
            shard_calls = [dataclasses.replace(self, seed=a, seeds=n, shards=()).command_line(part)
                           for (a, n), part in zip(self.shards, parts, strict=True)]
            return " && ".join([*shard_calls, f"mdpt reproduce --merge {','.join(parts)} --out {out}"])
        words = ["mdpt reproduce", f"--datasets {','.join(self.datasets)}", f"--algos {','.join(self.algos)}",
                 f"--seeds {self.seeds}", f"--seed {self.seed}", f"--steps {self.steps}",
                 f"--eval-every {self.eval_every}", f"--curve-episodes {self.curve_episodes}",
                 f"--episodes {self.final_episodes}"]
        for key, flag in (("curve_candidates", "--curve-candidates"), ("eval_max_steps", "--eval-max-steps"),
                          ("unfreeze_at", "--unfreeze-at"), ("swap_candidates", "--swap-candidates")):
            if getattr(self, key) is not None:
                words.append(f"{flag} {getattr(self, key)}")
        words += [f"--stage1 {self.stage1}", f"--ensemble-k {self.ensemble_k}",
                  f"--transfer-points {self.transfer_points}"]
        if self.studies != STUDIES:
            words.append(f"--studies {','.join(self.studies)}")
        if not self.derive:
            words.append("--train-every-run")
        words += [f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in sorted(flatten(self.base).items())]
        return " ".join(words + [f"--out {out}"])


def read_protocol(out: str | Path) -> dict:
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


def dataset_dir(dataset: str) -> str:
    """A dataset's folder name: its id (a Minari id's slashes as dashes), or a path's file stem."""
    from mdpt.data.registry import is_minari_id

    if is_minari_id(dataset) and not Path(dataset).exists():
        return dataset.replace("/", "-")
    return dataset if "/" not in dataset and not dataset.endswith((".hdf5", ".h5")) else Path(dataset).stem
