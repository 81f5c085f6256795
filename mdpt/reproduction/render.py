"""The reproduction's report: out/report/report.md (provenance, protocol, findings, one section per
dataset), findings.json (`analysis.analyse`'s result) and the figures, regenerated from what is on
disk at any time; the report directory is replaced atomically (a crash leaves the previous report).

A finished run whose files cannot be read (e.g. a copy made without its metrics.jsonl) makes
`write_report` refuse, naming it, unless `partial` asks for a report of the other runs, which then
names it at the top.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.evaluation.stats import mean_ci
from mdpt.io import atomic_dir, json_default, write_bytes_atomic, write_json_atomic
from mdpt.reports.figures import data_reference_line, figure, save
from mdpt.reports.markdown import ci, fmt, table
from mdpt.reproduction.analysis import analyse, load, series
from mdpt.reproduction.findings import (
    data_line,
    findings,
    stage1_note,
    unreadable_runs,
    waiting_for_evaluation,
)
from mdpt.reproduction.plan import JOINT, run_role
from mdpt.reproduction.protocol import Protocol
from mdpt.reproduction.verdicts import verdicts

CURVE_VARIANTS = (("guided", "-"), ("unguided", "--"))  # the learning curves drawn: every run's guided, joints' plain


# ----------------------------------------------------------------------------- figures
def curve_points(runs: dict) -> list[tuple[str, str, list[int], list[tuple[float, float, float]]]]:
    """(run, variant, steps, mean CIs) of every learning curve the figure draws."""
    out = []
    for name, run in sorted(runs.items()):
        for variant, _ in CURVE_VARIANTS:
            points = series(run, variant)
            if points and (variant == "guided" or run_role(name) == JOINT):
                out.append((name, variant, [s for s, _ in points], [mean_ci(x) for _, x in points]))
    return out


def fig_curves(curves: list, ds: str, path: Path, data_mean: float | None = None) -> None:
    """The learning curves (the baselines' among them), and the data's own episodes as a reference line."""
    fig = figure(8.0, 4.6)
    ax = fig.add_subplot()
    styles = dict(CURVE_VARIANTS)
    for name, variant, steps, cis in curves:
        line, = ax.plot(steps, [c[0] for c in cis], styles[variant], marker="o", ms=3, label=f"{name} · {variant}")
        ax.fill_between(steps, [c[1] for c in cis], [c[2] for c in cis], color=line.get_color(), alpha=0.12, lw=0)
    data_reference_line(ax, data_mean)
    ax.set_xlabel("policy gradient steps")
    ax.set_ylabel("normalized score")
    ax.set_title(f"{ds}: mean over seeds, 95% t interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save(fig, path)


def fig_necessity(nec: dict, ds: str, path: Path) -> None:
    fig = figure(8.0, 3.2 * max(1, len(nec)))
    for i, (algo, controls) in enumerate(sorted(nec.items())):
        ax = fig.add_subplot(len(nec), 1, i + 1)
        for label, gaps in controls.items():
            steps = [s[0] for s in gaps]
            line, = ax.plot(steps, [s[1] for s in gaps], marker="o", ms=3, label=label)
            ax.fill_between(steps, [s[2] for s in gaps], [s[3] for s in gaps], color=line.get_color(), alpha=0.12,
                            lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{ds} {algo}: guided joint minus control (95% CI)")
        ax.set_xlabel("policy gradient steps")
        ax.set_ylabel("score gap")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path)


# ----------------------------------------------------------------------------- sections
def protocol_line(p: Protocol) -> str:
    cands = f"; curves with {p.curve_candidates} candidates" if p.curve_candidates else ""
    shards = (f", run in {len(p.shards)} shards of seeds "
              f"{', '.join(f'{a}-{a + n - 1}' for a, n in p.shards)} and merged: time per step and memory are a "
              "shard's program's") if p.shards else ""
    return (f"Protocol: datasets {', '.join(p.datasets)}; algorithms {', '.join(p.algos)}; {p.seeds} seeds "
            f"(vmapped{shards}); {p.steps} steps; evaluation every {p.eval_every} steps on {p.curve_episodes} episodes "
            f"per seed (curves) and {p.final_episodes} at the last step (final points){cands}; stage-1 guidance "
            f"`{p.stage1}`" + (f", unfrozen at step {p.unfreeze_at}" if p.unfreeze_at else "") +
            "; scores normalized with each dataset's reference (`d4rl`: D4RL's infos.py constants; `dataset`: the "
            "data's own; see each dataset's data line). Every score is last-iterate "
            "unless marked; intervals are 95% t intervals over training seeds (Welch for two sets of runs, paired for "
            "the same seeds), and each finding's verdict is its family's permutation tests, Holm-adjusted.")


def pending_section(data: dict, ds: str) -> list[str]:
    """The planned runs of a dataset that the numbers below leave out: trained elsewhere, or not finished."""
    runs = data["runs"].get(ds, {})
    planned = (key.split("/", 1) for key in data["planned"])
    pending = [name for dataset, name in planned
               if dataset == ds and name not in runs and f"{ds}/{name}" not in data["unreadable"]]
    trained = [name for name in pending if f"{ds}/{name}" in data["trained"]]
    md = []
    if trained:
        md += [f"Trained without evaluation (`--train-only`): {', '.join(trained)}; the same command without "
               "--train-only, on a machine with the simulator, evaluates them.", ""]
        pending = [name for name in pending if name not in trained]
    if pending:
        md += [f"Not finished yet: {', '.join(pending)} (the same command continues them); every number below "
               "and in the findings comes from the finished runs only.", ""]
    return md


def gfdt_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    md = ["### GFDT vs joint (the paper's table)", ""]
    md += table(("algo", "joint final", "GFDT final", "GFDT - joint", "GFDT - joint, plain sampling",
                 "AUC joint / GFDT", "steps to 90% of joint final (joint / GFDT)", "ms/step joint / GFDT",
                 "peak MiB joint / GFDT", "guidance joint / GFDT", "selection joint / GFDT"),
                [[x["algo"], ci(x["joint_final"]), ci(x["gfdt_final"]), ci(x["final_diff"]),
                  ci(x["plain_diff"]) if x.get("plain_diff") else "n/a",
                  f"{fmt(x['joint_auc'])} / {fmt(x['gfdt_auc'])}",
                  f"{x['steps_to_90_joint']} / {x['steps_to_90_gfdt']}",
                  f"{fmt(x['ms_per_step'][0], 2)} / {fmt(x['ms_per_step'][1], 2)}",
                  f"{fmt(x['peak_mib'][0])} / {fmt(x['peak_mib'][1])}",
                  f"{x['joint_guidance']} / {x['gfdt_guidance']}", f"{x['selector'][0]} / {x['selector'][1]}"]
                 for x in rows])
    md += ["", f"Final = guided score at step {rows[0]['final_step']}, {rows[0]['seeds']} seeds x "
           f"{rows[0]['episodes']} episodes. Plain sampling = the same two policies without selection "
           "(one candidate) at that step. AUC = mean score over the learning curve. ms/step is the policy's "
           "training step; guidance-first also needs its stage-1 guidance, trained once per dataset and "
           "shared: " + "; ".join(stage1_note(x) for x in rows) + ".", ""]
    return md + gfdt_notes(rows)


def gfdt_notes(rows: list[dict]) -> list[str]:
    """What a reader of the GFDT table must know: derived guidance-first policies, grouped programs."""
    md = []
    derived = [x["algo"] for x in rows if x.get("gfdt_derived")]
    if derived:
        md += [f"{', '.join(a.upper() for a in derived)}: the guidance-first policy is the joint run's policy (its "
               "loss never reads a critic; checked bit for bit on the first chunk, then taken from the joint run's "
               "snapshots), so its GFDT - joint difference is that of the two guidance modules selecting its "
               "actions; its ms/step and peak memory are its own program's.", ""]
    grouped = sorted({n for x in rows for n in x["programs"] if n > 1})
    if grouped:
        md += ["Some runs trained as one program with the other datasets of their environment "
               f"({', '.join(map(str, grouped))} datasets, `--group`): their ms/step and peak memory are that "
               "program's; a pair trained in programs of different sizes is not compared (n/a).", ""]
    return md


def necessity_section(nec: dict, ds: str, report_dir: Path) -> list[str]:
    if not nec:
        return []
    fig_necessity(nec, ds, report_dir / f"necessity_{ds}.png")
    md = ["### Guidance necessity", "", f"![necessity gaps](necessity_{ds}.png)", ""]
    rows = [[algo, label, ci(gaps[0][1:]), ci(gaps[-1][1:])]
            for algo, controls in sorted(nec.items()) for label, gaps in controls.items()]
    md += table(("algo", "control", "gap at the first evaluation", "gap at the last"), rows) + [""]
    if "idql" in nec:
        md += ["IDQL's policy never sees its critic in training: its training-time controls are IDQL itself; "
               "its necessity is the inference-time gap.", ""]
    return md


def values_section(values: list[dict]) -> list[str]:
    if not values:
        return []
    md = ["### Critic values", ""]
    md += table(("run", r"largest \|Q\| over training (any seed)", r"bound max \|r\| / (1 - gamma)", "share",
                 "within the bound"),
                [[x["run"], f"{x['max_abs_q']:.3g}", f"{x['bound']:.3g}", f"{100 * x['share']:.0f}%",
                  "yes" if x["within"] else f"no, from step {x['first_exceeded_step']}"] for x in values])
    return md + ["", "Runs without a row train no critic of their own (they read a frozen guidance module).", ""]


def transfer_section(t: dict) -> list[str]:
    if not (t["swaps"] or t["cross"] or t["ensembles"]):
        return []
    md = ["### Cross-module transfer (step-matched checkpoints)", ""]
    rows = [[x["policy"], x["step"], x["swap"], (x["selector"] or {}).get("candidates", "?"), ci(x["own"]),
             ci(x["swapped"]), f"{fmt(x['own_iqr'])} -> {fmt(x['swapped_iqr'])}"]
            for x in t["swaps"] + t["cross"] + t["ensembles"]]
    md += table(("policy", "step", "guidance at inference", "candidates", "own guidance", "swapped",
                 "seed IQR own -> swapped"), rows) + [""]
    if t["own_cells"]:
        md += ["Own guidance: the policy re-evaluated with its own guidance at the swaps' candidate count and "
               "episode seeds (`--swap-candidates`), so each row differs only in the guidance.", ""]
    return md


def family_table(title: str, finding: dict | None, note: str) -> list[str]:
    """One calibrated family's comparisons as a table: the difference with its interval, the Holm-adjusted p,
    the effect, the seeds and the word."""
    from mdpt.evaluation.inference import Verdict

    items = [(k, Verdict.from_json(v)) for k, v in ((finding or {}).get("verdicts") or {}).items()]
    if not items:
        return []
    rows = [[k, f"{v.test.estimate:+.1f} [{v.test.low:+.1f}, {v.test.high:+.1f}]", f"{v.p_adjusted:.3g}",
             "n/a" if v.test.effect != v.test.effect else f"{v.test.effect:+.2f}",
             f"{v.test.n[0]} v {v.test.n[1]}", v.word] for k, v in items]
    return ([f"### {title}", ""] + table(("comparison", "difference [95% CI]", f"p (Holm, {len(items)})",
                                          "effect (sd)", "seeds", "verdict"), rows)
            + ["", f"{items[0][1].test.method}; {note}", ""])


def fig_profiles(across: dict, path: Path) -> None:
    """Performance profiles: the share of runs x tasks above each normalized score, one line per method."""
    fig = figure(6.4, 3.8)
    ax = fig.add_subplot()
    for name, shares in across["profiles"].items():
        ax.plot(across["taus"], shares, marker="o", ms=2.5, label=name)
    ax.set_xlabel("normalized score tau")
    ax.set_ylabel("share of runs x tasks above tau")
    ax.set_title(f"score distributions, {across['runs']} runs x {len(across['tasks'])} task(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)


def across_tasks_section(across: dict | None, report_dir: Path) -> list[str]:
    """rliable's aggregates over every dataset, each method's last guided evaluation."""
    if not across:
        return []
    fig_profiles(across, report_dir / "profiles.png")
    rows = [[name, *(f"{e[0]:.1f} [{e[1]:.1f}, {e[2]:.1f}]" for e in (est[m] for m in ("iqm", "mean", "median",
                                                                                          "optimality_gap")))]
            for name, est in across["estimates"].items()]
    md = [f"### Across tasks (rliable): {across['runs']} runs x {len(across['tasks'])} task(s), last iterate, guided",
          "", *table(("method", "IQM", "mean", "median", "optimality gap"), rows), ""]
    md += [f"- P({k.replace(' over ', ' > ')}) = {p:.2f} [{lo:.2f}, {hi:.2f}]" for k, (p, lo, hi) in
           across["improvement"].items()]
    few = (f" With {across['runs']} runs per task these intervals are close to the range of the runs and are "
           "not evidence on their own; the verdicts are the permutation tests above." if across["runs"] < 10 else "")
    return md + ["", f"Tasks: {', '.join(across['tasks'])}. rliable's stratified bootstrap (runs resampled within "
                     f"each task), 95% percentile intervals; P(X > Y): Mann-Whitney over runs, averaged over tasks."
                 + few, "", "![score distributions](profiles.png)", ""]


def arms_section(result: dict) -> list[str]:
    """The `arms` study: guidance-first with its confounds taken apart, and eta 0 selected both ways."""
    v = result.get("verdicts", {})
    note = ("joint's selection: the policy's candidates scored by its algorithm's joint critic of the same step at "
            "the task beta, as the joint run selects")
    return (family_table("Guidance-first with the confounds taken apart (arm minus joint, last step)", v.get("arms"),
                         note)
            + family_table("Eta 0 selected both ways (control minus joint, last step)", v.get("arms_eta0"), note))


def dataset_section(data: dict, ds: str, r: dict, report_dir: Path) -> list[str]:
    runs = data["runs"][ds]
    md = [f"## {ds}", ""] + data_line(r) + pending_section(data, ds)
    curves = curve_points(runs)
    if any(variant == "guided" for _, variant, _, _ in curves):
        fig_curves(curves, ds, report_dir / f"curves_{ds}.png", (r.get("data") or {}).get("mean"))
        md += [f"![learning curves](curves_{ds}.png)", ""]
    return (md + gfdt_section(r["gfdt"]) + necessity_section(r["necessity"], ds, report_dir)
            + values_section(r.get("values")) + transfer_section(r["transfer"]))


def render(data: dict, result: dict, report_dir: Path, header: list[str]) -> str:
    md = ["# Reproduction of the paper's three findings", ""] + header + [protocol_line(data["protocol"]), "",
                                                                          "## Findings", ""]
    md += unreadable_runs(data) + waiting_for_evaluation(data) + findings(result) + [""] + arms_section(result)
    md += across_tasks_section(result.get("across_tasks"), report_dir)
    for ds, r in result["datasets"].items():
        md += dataset_section(data, ds, r, report_dir)
    return "\n".join(md) + "\n"


def shown_path(out: str | Path) -> str:
    """`--out` as a report prints it: as the user gave it, relative to the working directory where it is
    inside it (a report never prints the absolute path of the machine it was written on)."""
    path = Path(out)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)


def provenance(data: dict, out: str | Path) -> list[str]:
    """Command, versions, machines and wall time of what is on disk (each run records its own)."""
    runs = [run for per_ds in data["runs"].values() for run in per_ds.values()]
    seen = {json.dumps(run["config"].get("versions", {}), sort_keys=True) for run in runs}
    versions = "; ".join(", ".join(f"{k} {v}" for k, v in json.loads(x).items()) for x in sorted(seen)) or "n/a"
    run_wall = sum(float(r.get("wall_s", 0.0)) for run in runs for r in run["metrics"])
    cells = [c for per_ds in data["transfer"].values() for c in per_ds.values()]
    swap_wall = sum(float(c.get("wall_s", 0.0)) for c in cells)
    untimed = sum("wall_s" not in c for c in cells)
    return [f"- command: `{data['protocol'].command_line(shown_path(out))}`",
            f"- versions (as each run recorded them): {versions}",
            f"- report written on: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
            f"(simulation always runs on a CPU; each run's backend is in its versions)",
            f"- wall time: training and evaluation of {len(runs)} runs {run_wall / 3600:.2f} h; {len(cells)} "
            f"transfer evaluations {swap_wall / 3600:.2f} h" + (f" ({untimed} of them untimed)" if untimed else ""),
            ""]


def write_report(out: str | Path, header: list[str] | None = None, partial: bool = False) -> Path:
    """Regenerate out/report/ from the runs on disk; the old report stays until the new one is whole. A
    finished run that cannot be read is an error (nothing written) unless `partial`."""
    data = load(Path(out))
    if data["unreadable"] and not partial:
        key, why = next(iter(data["unreadable"].items()))
        more = f" and {len(data['unreadable']) - 1} more run(s)" if len(data["unreadable"]) > 1 else ""
        raise MDPTError(f"{Path(out)}: cannot read the finished run {key}{more} ({why}); restore its files, or pass "
                        "--partial for a report of the other runs that names the missing ones")
    result = {**analyse(data), "verdicts": verdicts(data)}
    with atomic_dir(Path(out) / "report") as tmp:
        text = render(data, result, tmp, provenance(data, out) if header is None else header)
        write_bytes_atomic(tmp / "report.md", text.encode())
        write_json_atomic(tmp / "findings.json", json.loads(json.dumps(result, default=json_default)))
    return Path(out) / "report" / "report.md"
