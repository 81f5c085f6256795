"""The reproduction's findings in words: for each of the paper's three findings the word of its calibrated
family (`verdicts.py`: supported, contradicted, mixed, not shown, not enough seeds), with the test, the
Holm-adjusted p-values, effect sizes and seeds behind it, and the caveats (critic values, datasets that
barely separate the methods). Reads the analysis and verdicts of findings.json; computes no statistic."""

from __future__ import annotations

from mdpt.evaluation.inference import BAND, Verdict
from mdpt.reports.markdown import fmt, pct

NARROW_SPREAD = 5.0  # normalized points: curves that all end closer than this cannot rank the methods


def other_spreads_sentence(v: dict) -> str:
    """The seed-spread change of the cross-algorithm swaps and of the guidance ensembles, tested as the
    paper's finding is."""
    names = {"spread_cross": "the other algorithm's guidance", "spread_ensemble": "a guidance ensemble"}
    parts = []
    for key, name in names.items():
        if v.get(key):
            m = v[key]["measures"]
            parts.append(f"with {name}: **{v[key]['word']}**, {fmt(m['points'])} points per cell (median), "
                         f"{pct(m['relative_median'], 0)} relative, over {m['cells']} cells")
    return f" The seed IQR own -> {'; '.join(parts)}." if parts else ""


def _verdicts(finding: dict | None) -> list[tuple[str, Verdict]]:
    return [(label, Verdict.from_json(v)) for label, v in ((finding or {}).get("verdicts") or {}).items()]


def _family_line(finding: dict | None, what: str, example_count: int = 2, band: float = BAND) -> str:
    """One family's word, how it was tested, and its decided comparisons (or the closest ones)."""
    if not finding:
        return f"{what}: not tested"
    if finding.get("why"):
        return f"{what}: not computed ({finding['why']})"
    items = _verdicts(finding)
    decided = [(k, v) for k, v in items if v.decided]
    shown = decided or sorted(items, key=lambda kv: kv[1].p_adjusted)
    method = items[0][1].test.method if items else ""
    rule = f"Holm-adjusted, band {band:g} points" if band else "no minimum effect"
    return (f"{what}: **{finding['word']}** ({len(items)} comparison{'s' if len(items) != 1 else ''}, {method}, "
            f"{rule}; {len(decided)} decided): " + "; ".join(f"{k}: {v.sentence()}" for k, v in shown[:example_count]))


def necessity_finding(result: dict) -> str:
    """Finding 1 in two parts, each one calibrated family (`verdicts.py`): does a control's gap change between
    the first and the last evaluation of one run (training stage; the change is tested, paired by seed), and do
    two algorithms' gaps for the same control differ (algorithm)?"""
    v = result.get("verdicts", {})
    if not v.get("stage") and not v.get("algorithm") and not v.get("stage_mismatched"):
        return "1. **Guidance necessity: not tested** (no learning curves with controls yet)."
    text = ("1. **Guidance necessity depends on training stage and algorithm.** "
            + _family_line(v.get("stage"), "Stage (the gap guided-joint minus control at the last evaluation minus "
                                           "at the first)") + ". "
            + _family_line(v.get("algorithm"), "Algorithm (two algorithms' gaps for one control and step)") + ".")
    if v.get("arms_eta0"):
        text += " " + _family_line(v["arms_eta0"], "Eta 0 selected both ways (the policy trained without guidance, "
                                                   "re-selected by the IQL guidance at beta 0.5 and, the authors' way, "
                                                   "by the joint run's critic at the task beta; minus joint)", 2) + "."
    if v.get("stage_mismatched"):
        text += (f" Left out of the stage test, their first and last points evaluated with different candidates or "
                 f"episodes (one evaluation protocol at every point: `--curve-candidates` and `--curve-episodes` "
                 f"equal to the final ones): {'; '.join(v['stage_mismatched'][:4])}"
                 + (f" and {len(v['stage_mismatched']) - 4} more" if len(v["stage_mismatched"]) > 4 else "") + ".")
    return text


def findings(result: dict) -> list[str]:
    """The findings section: the three verdicts, the critics' values, and a caveat per dataset that barely
    separates the methods."""
    return [necessity_finding(result), gfdt_finding(result), transfer_finding(result), values_line(result),
            *narrow_caveats(result)]


def gfdt_finding(result: dict) -> str:
    """Finding 2: does guidance-first training end better than joint training, and at what cost?"""
    gf = [(ds, row) for ds, r in result["datasets"].items() for row in r["gfdt"]]
    v = result.get("verdicts", {})
    if not gf or not v.get("gfdt"):
        return "2. **GFDT vs joint: not tested** (no finished pair of runs yet)."
    cheaper = [x for x in gf if None not in x[1]["ms_per_step"] and x[1]["ms_per_step"][1] < x[1]["ms_per_step"][0]]
    mem = [x for x in gf if None not in x[1]["peak_mib"] and x[1]["peak_mib"][1] < x[1]["peak_mib"][0]]
    ratios = [row["ms_per_step"][1] / row["ms_per_step"][0] for _, row in gf if None not in row["ms_per_step"]]
    mratios = [row["peak_mib"][1] / row["peak_mib"][0] for _, row in gf if None not in row["peak_mib"]]
    text = ("2. " + _family_line(v["gfdt"], "**GFDT gives a better final score than joint training** (guidance-first "
                                             "minus joint, last iterate, guided)", len(gf))
            + f". Cost: guidance-first is cheaper per step in {len(cheaper)} of {len(gf)} "
            f"(time ratio GF/joint {fmt(min(ratios), 2) if ratios else 'n/a'}.."
            f"{fmt(max(ratios), 2) if ratios else 'n/a'}) and lighter in peak memory in {len(mem)} "
            f"(ratio {fmt(min(mratios), 2) if mratios else 'n/a'}..{fmt(max(mratios), 2) if mratios else 'n/a'})"
            + stage1_sentence(gf) + ".")
    if v.get("gfdt_plain"):
        text += " " + _family_line(v["gfdt_plain"], "The policies alone (plain sampling from both, no selection)",
                                   len(gf)) + "."
    if v.get("baselines"):
        text += " " + _family_line(v["baselines"], "Against the baselines (each diffusion policy minus BC or IQL's "
                                                   "AWR policy, same data, budget and seeds)", 4) + "."
    if v.get("arms"):
        text += " " + _family_line(v["arms"], "With the confounds taken apart (guidance-first against the IQL stage 1, "
                                              "the joint run's own critic frozen, and the authors' stage 1, each with "
                                              "its own selection and with joint's: its algorithm's joint critic at the "
                                              "task beta; minus joint, last step)", 6) + "."
    return text


def transfer_finding(result: dict) -> str:
    """Finding 3: does an independently trained guidance shrink the spread of scores? Two measures, named: the
    seed IQR (tested by seed over every cell) and the authors' per-checkpoint variance over one seed's episodes."""
    v = result.get("verdicts", {})
    spread = v.get("spread")
    if not spread:
        return "3. **Cross-module transfer: not tested** (no step-matched swaps evaluated yet)."
    m = spread.get("measures") or {}
    text = ("3. " + _family_line(spread, "**An independently trained guidance at inference shrinks the spread of "
                                         "scores across seeds** (seed IQR, swapped minus own, median over cells; "
                                         "the paper reports -86%)",
                                 band=0.0)
            + f". Measures over {m.get('cells', 0)} step-matched cells: the seed IQR changes by "
            f"{fmt(m.get('points'))} points (median per cell), {pct(m.get('relative_median'), 0)} (median relative change "
            f"of the {m.get('cells_with_spread', 0)} cells whose own seeds differ), {pct(m.get('relative_sum'), 0)} "
            "(summed over cells, the earlier reports' measure, which weights cells by their own IQR).")
    ep = spread.get("episodes")
    if ep:
        t = ep.get("test") or {}
        p = f", sign-flip p = {t['p']:.3g} over {t['n'][0]} seeds" if "p" in t else ""
        text += (f" The authors' measure (their transfer scripts log each checkpoint's variance over one training "
                 f"seed's episodes): own -> swapped variance change {pct(ep.get('seed0'), 0)} for seed 0, "
                 f"{pct(ep.get('median_over_seeds'), 0)} median over seeds{p}; the paper's -86% most likely refers to "
                 "this episode-level spread of one seed, not to a spread across seeds.")
    if result.get("swap_candidates"):
        text += (f" Own and swapped guidance both score {result['swap_candidates']} candidates per state, on the "
                 "same episode seeds.")
    cross = [(ds, row) for ds, r in result["datasets"].items() for row in r["transfer"]["cross"]]
    if cross:
        near = [x for x in cross if x[1]["swapped"][0] >= 0.9 * max(x[1]["own"][0], 1e-9)]
        text += (f" Across algorithms, {len(near)} of {len(cross)} pairings score at least 90% of the policy's "
                 "own-guidance score: " + "; ".join(
                     f"{ds} {row['policy']} with {row['swap']} at step {row['step']}: {fmt(row['swapped'][0])} vs "
                     f"own {fmt(row['own'][0])}" for ds, row in cross[:4]) + ".")
    return text + other_spreads_sentence(v)


def narrow_caveats(result: dict) -> list[str]:
    """A caveat for each dataset on which the joint and guidance-first policies all end within NARROW_SPREAD."""
    lines = []
    for ds, r in result["datasets"].items():
        spread = r.get("methods_spread")
        if spread and spread["range"] < NARROW_SPREAD:
            own = f", beside the data's own episodes at {fmt(r['data']['mean'])}" if r.get("data") else ""
            lines.append(f"\n**Caveat, {ds}:** the joint and guidance-first policies all end within "
                         f"{fmt(spread['range'])} points of each other ({fmt(spread['low'][1])}.."
                         f"{fmt(spread['high'][1])}{own}): this dataset barely separates the methods, so the "
                         "verdicts above rest on differences of a few points.")
    return lines


def values_line(result: dict) -> str:
    """The critics' values beside their bounds: a critic past its bound makes its runs' scores suspect."""
    rows = [(ds, row) for ds, r in result["datasets"].items() for row in r.get("values", [])]
    if not rows:
        return "\nValues: no trained critic recorded its |Q| yet."
    past = [f"{ds} {row['run']} (|Q| {row['max_abs_q']:.3g} of {row['bound']:.3g}, from step {row['first_exceeded_step']})"
            for ds, row in rows if not row["within"]]
    if past:
        return (f"\n**Warning, values:** {len(past)} of {len(rows)} critics left their bound max |r| / (1 - gamma): "
                f"{'; '.join(past)}. Scores selected or trained by them are suspect.")
    ds, top = max(rows, key=lambda x: x[1]["share"])
    return (f"\nValues: all {len(rows)} trained critics stayed inside their bound max |r| / (1 - gamma) over training; "
            f"the largest |Q| is {100 * top['share']:.0f}% of its bound ({ds} {top['run']}: {top['max_abs_q']:.3g} of "
            f"{top['bound']:.3g}).")


def waiting_for_evaluation(data: dict) -> list[str]:
    """A line for the runs trained without evaluation (`mdpt reproduce --train-only`), if any."""
    if not data["trained"]:
        return []
    return [f"**{len(data['trained'])} of {len(data['planned'])} runs are trained but not evaluated yet** "
            "(`--train-only`, e.g. on a GPU machine without the simulator): copy this directory to a machine with the "
            "simulator and run the same command there without --train-only; the findings below use the evaluated "
            "runs only.", ""]


def unreadable_runs(data: dict) -> list[str]:
    """A line naming the finished runs whose files could not be read (a partial report), if any."""
    if not data["unreadable"]:
        return []
    named = "; ".join(f"{key} ({why})" for key, why in data["unreadable"].items())
    return [f"**Partial report: {len(data['unreadable'])} of {len(data['planned'])} runs could not be read**: "
            f"{named}. The findings below use the other runs only.", ""]


def stage1_note(row: dict) -> str:
    st = row.get("stage1")
    if not st:
        return f"{row['algo']}: n/a"
    return (f"{row['algo']}: {st['run']}, {st['steps']} steps at {fmt(st['ms_per_step'], 2)} ms, GF/joint time "
            f"{fmt(row['time_with_stage1'], 2)} with it")


def stage1_sentence(gf: list[tuple[str, dict]]) -> str:
    ratios = [row["time_with_stage1"] for _, row in gf if row["time_with_stage1"] is not None]
    if not ratios:
        return ""
    return (f"; with the stage-1 guidance's training added to guidance-first whole, the time ratio is "
            f"{fmt(min(ratios), 2)}..{fmt(max(ratios), 2)}")


def data_line(r: dict) -> list[str]:
    """Where the data's own episodes score, and where every learning curve ends."""
    parts = []
    if r.get("data"):
        d = r["data"]
        parts.append(f"Data: {d['episodes']} episodes, {d['transitions']} transitions; the data's own episodes score "
                     f"{fmt(d['mean'])} (min {fmt(d['min'])}, max {fmt(d['max'])}; `{d['reference']}` reference).")
    if r.get("spread"):
        sp = r["spread"]
        parts.append(f"Every learning curve (run x inference variant) ends between {fmt(sp['low'][1])} "
                     f"({sp['low'][0]}) and {fmt(sp['high'][1])} ({sp['high'][0]}).")
    return [" ".join(parts), ""] if parts else []
