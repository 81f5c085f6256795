"""The reproduction's findings in words: for each of the paper's three findings a verdict (supported,
not supported, mixed, inconclusive) by our data, with its numbers and CIs, and the caveats (critic
values, datasets that barely separate the methods). Reads `analysis.analyse`'s result; computes no
statistic of its own."""

from __future__ import annotations

from mdpt.reports.markdown import ci, fmt

NARROW_SPREAD = 5.0  # normalized points: curves that all end closer than this cannot rank the methods


def other_spreads_sentence(spreads: dict) -> str:
    """The seed-spread change of the cross-algorithm swaps and of the guidance ensembles, measured as the
    paper's finding is (relative, and in points per cell)."""
    names = {"cross": "with the other algorithm's guidance", "ensemble": "with a guidance ensemble"}
    parts = [f"{names[group]} {ci(rel, 0, pct=True)} ({ci(points)} points per cell, {n} cells)"
             for group, (rel, points, n) in spreads.items()]
    return f" The seed IQR changes own -> {'; '.join(parts)}." if parts else ""


def _excludes_zero(ci) -> bool:
    return ci[1] > 0 or ci[2] < 0


def _stage_changed(first, last) -> bool:
    """A gap that becomes, or stops being, distinguishable from 0, or that changes sign with both CIs
    excluding 0."""
    if _excludes_zero(first) != _excludes_zero(last):
        return True
    return _excludes_zero(first) and (first[0] > 0) != (last[0] > 0)


def algorithm_contrasts(result: dict) -> list[tuple]:
    """(dataset, control, step, (algo, gap CI), (algo, gap CI)) where two algorithms' gaps for the same control
    at the same step have disjoint CIs: the control matters more for one algorithm than for the other."""
    out = []
    for ds, r in result["datasets"].items():
        nec = r["necessity"]
        algos = sorted(nec)
        for i, a in enumerate(algos):
            for b in algos[i + 1:]:
                for label in sorted(set(nec[a]) & set(nec[b])):
                    gb = {t: ci for t, *ci in nec[b][label]}
                    for t, *ca in nec[a][label]:
                        cb = gb.get(t)
                        if cb is not None and (ca[1] > cb[2] or cb[1] > ca[2]):
                            out.append((ds, label, t, (a, ca), (b, cb)))
    return out


def necessity_finding(result: dict) -> str:
    """Finding 1 in two parts: does a control's gap change between the first and the last evaluation
    (training stage), and do two algorithms' gaps for the same control differ (algorithm)?"""
    rows = [(ds, algo, label, series[0], series[-1]) for ds, r in result["datasets"].items()
            for algo, controls in r["necessity"].items() for label, series in controls.items() if len(series) >= 2]
    if not rows:
        return "1. **Guidance necessity: inconclusive** (no learning curves with controls yet)."
    changes = [x for x in rows if _stage_changed(x[3][1:4], x[4][1:4])]
    contrasts = algorithm_contrasts(result)
    paired = any(len(r["necessity"]) >= 2 for r in result["datasets"].values())
    stage = "supported" if changes else "not supported"
    algorithm = ("supported" if contrasts else "not supported" if paired
                 else "untested (one algorithm with controls)")
    verdict = ("supported" if changes and contrasts else "not supported" if not changes and not contrasts
               else "partly supported")
    example = max(changes or rows, key=lambda x: abs(x[4][1] - x[3][1]))  # the largest move along training
    text = (f"1. **Guidance necessity depends on training stage and algorithm: {verdict}** by our data "
            f"(stage: {stage}; algorithm: {algorithm}). Of {len(rows)} (dataset, algorithm, control) gap curves, "
            f"{sum(_excludes_zero(x[3][1:4]) for x in rows)} have a CI that excludes 0 at the first evaluation and "
            f"{sum(_excludes_zero(x[4][1:4]) for x in rows)} at the last; {len(changes)} change between the two (in "
            f"sign or in whether the CI excludes 0). "
            f"E.g. {example[0]} {example[1]}, {example[2]}: gap {ci(example[3][1:4])} at step {example[3][0]}, "
            f"{ci(example[4][1:4])} at step {example[4][0]}.")
    if contrasts:
        ds, label, t, (a, ca), (b, cb) = contrasts[0]
        text += (f" Between algorithms, {len(contrasts)} (control, step) pairs have disjoint gap CIs, e.g. {ds} "
                 f"{label} at step {t}: {a} {ci(ca)}, {b} {ci(cb)}.")
    return text


def findings(result: dict) -> list[str]:
    """The findings section: the three verdicts, the critics' values, and a caveat per dataset that barely
    separates the methods."""
    return [necessity_finding(result), gfdt_finding(result), transfer_finding(result), values_line(result),
            *narrow_caveats(result)]


def gfdt_finding(result: dict) -> str:
    """Finding 2: does guidance-first training end better than joint training, and at what cost?"""
    gf = [(ds, row) for ds, r in result["datasets"].items() for row in r["gfdt"]]
    if not gf:
        return "2. **GFDT vs joint: inconclusive** (no finished pair of runs yet)."
    better = [x for x in gf if x[1]["final_diff"][1] > 0]
    worse = [x for x in gf if x[1]["final_diff"][2] < 0]
    cheaper = [x for x in gf if None not in x[1]["ms_per_step"] and x[1]["ms_per_step"][1] < x[1]["ms_per_step"][0]]
    mem = [x for x in gf if None not in x[1]["peak_mib"] and x[1]["peak_mib"][1] < x[1]["peak_mib"][0]]
    verdict = ("supported" if better and not worse else "not supported" if worse and not better
               else "mixed" if better and worse else "inconclusive (no difference outside the CIs)")
    rows = "; ".join(f"{ds} {row['algo']}: GFDT - joint {ci(row['final_diff'])}" for ds, row in gf)
    ratios = [row["ms_per_step"][1] / row["ms_per_step"][0] for _, row in gf if None not in row["ms_per_step"]]
    mratios = [row["peak_mib"][1] / row["peak_mib"][0] for _, row in gf if None not in row["peak_mib"]]
    return (f"2. **GFDT gives a better final score than joint training: {verdict}** ({len(better)} of "
            f"{len(gf)} settings better, {len(worse)} worse, CI of the difference excluding 0): {rows}. "
            f"Cost: guidance-first is cheaper per step in {len(cheaper)} of {len(gf)} "
            f"(time ratio GF/joint {fmt(min(ratios), 2) if ratios else 'n/a'}.."
            f"{fmt(max(ratios), 2) if ratios else 'n/a'}) and lighter in peak memory in {len(mem)} "
            f"(ratio {fmt(min(mratios), 2) if mratios else 'n/a'}..{fmt(max(mratios), 2) if mratios else 'n/a'})"
            + stage1_sentence(gf) + "." + plain_sampling_sentence(gf))


def transfer_finding(result: dict) -> str:
    """Finding 3: does an independently trained guidance shrink the spread of scores across seeds?"""
    spread = result["spread_all"]
    if not spread:
        return "3. **Cross-module transfer: inconclusive** (no step-matched swaps evaluated yet)."
    cross = [(ds, row) for ds, r in result["datasets"].items() for row in r["transfer"]["cross"]]
    verdict = "supported" if spread[2] < 0 else "not supported" if spread[1] > 0 else "inconclusive"
    text = (f"3. **An independently trained guidance at inference shrinks the spread of scores across seeds: "
            f"{verdict}**: relative IQR change own -> swapped {ci(spread, 0, pct=True)} over "
            f"{result['spread_cells']} step-matched (policy, step) cells (the paper reports -86%)")
    if result.get("spread_points"):
        text += f"; in points, the seed IQR changes by {ci(result['spread_points'])} per cell"
    text += "."
    if result.get("swap_candidates"):
        text += (f" Own and swapped guidance both score {result['swap_candidates']} candidates per state, on the "
                 "same episode seeds.")
    if cross:
        near = [x for x in cross if x[1]["swapped"][0] >= 0.9 * max(x[1]["own"][0], 1e-9)]
        text += (f" Across algorithms, {len(near)} of {len(cross)} pairings score at least 90% of the policy's "
                 "own-guidance score: " + "; ".join(
                     f"{ds} {row['policy']} with {row['swap']} at step {row['step']}: {fmt(row['swapped'][0])} vs "
                     f"own {fmt(row['own'][0])}" for ds, row in cross[:4]) + ".")
    return text + other_spreads_sentence(result.get("other_spreads", {}))


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


def plain_sampling_sentence(gf: list[tuple[str, dict]]) -> str:
    """The GFDT - joint difference of the policies themselves (plain sampling), and where the selector made the
    guided difference: joint and guidance-first policies are selected by different guidance at its own preset."""
    plain = [(ds, row) for ds, row in gf if row.get("plain_diff")]
    if not plain:
        return ""
    text = (" The policies alone (plain sampling from both, no selection): " + "; ".join(
        f"{ds} {row['algo']} at step {row['plain_step']}: {ci(row['plain_diff'])}" for ds, row in plain) + ".")
    by_selection = [f"{ds} {row['algo']}" for ds, row in plain
                    if _excludes_zero(row["final_diff"]) and row["plain_diff"][0] * row["final_diff"][0] <= 0]
    if by_selection:
        text += (f" In {', '.join(by_selection)} the guided difference comes from the selection at inference (each "
                 "mode's guidance with its own preset): sampled plainly, the policies differ the other way or not at "
                 "all.")
    return text


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
