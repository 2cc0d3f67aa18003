"""What ``evaluate`` writes: ``evaluation.md`` (the table, the study's paired differences,
convergence and what the real-only segmenters see in the synthetic pairs), the CSV files and
the figures. Kept apart from :mod:`.evaluation`, which trains and scores."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .convergence import convergence_markdown
from .evaluation import (
    BOOT_SEED,
    LOSS_NAMES,
    METRICS,
    N_BOOT,
    STUDY_METRICS,
    SUBSET_STREAM,
    EvaluationResult,
)
from .masks import CLASS_NAMES
from .study_power import power_notes
from .synthetic_seen import RECALLS, seen_markdown


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(result: EvaluationResult) -> str:
    """The summary as Markdown: settings, one row per arm (mean ± std over seeds), notes."""
    s = result.settings
    cols = [m for m in METRICS if any(not math.isnan(result.summary[a][m][0])
                                      for a in result.summary)]
    how = ", pre-train then fine-tune" if s["pretrain_synthetic"] else ""
    if s.get("pretrain_steps"):
        how = (f", pre-train {s['pretrain_steps']} steps on the synthetic pairs, then the "
               "whole budget on the real ones")
    if s.get("synthetic_ignore"):
        how += (", synthetic pixels of class " + ", ".join(
            f"{c} ({CLASS_NAMES[c]})" for c in s["synthetic_ignore"]) + " ignored")
    if s.get("synthetic_ignore_off_mask"):
        share = [r["synthetic_ignored_share"] for r in result.runs
                 if "synthetic_ignored_share" in r]
        how += (", the synthetic class-0 pixels the real-only segmenter calls an object "
                "ignored" + (f" ({np.mean(share):.1%} of their pixels)" if share else ""))
    lines = [
        "# Does the synthetic set help a segmenter on real images?", "",
        f"Real pairs {s['n_real']}, synthetic pairs {s.get('n_synthetic_kept', s['n_synthetic'])}"
        f" (of {s['n_synthetic']}), real test images {s['n_test']}. Budget: {s['steps']} steps "
        f"of batch {s['batch_size']} at {s['crop']} px per run, seeds 0..{s['seeds'] - 1}, "
        f"synthetic share {s['mix']}{how}"
        f"; loss {LOSS_NAMES[s.get('loss', 'weighted_ce')]}"
        f"; precision {s.get('precision')} ({s.get('precision_rule')}); boundary F1 tolerance "
        f"{s['tolerance']} px; {s['seconds']} s in all.", "",
        "| arm | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols)]
    for arm, figs in result.summary.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(*figs[c]) for c in cols) + " |")
    lines += ["", "Mean ± standard deviation over seeds; Dice/IoU pool the pixels of all test "
              "images; n/a: the class is in neither prediction nor truth.", ""]
    if s.get("n_stacks"):
        r, y, t = s["n_stacks"]
        lines += [f"(Z, Y, X) stacks were split into 2-D slices, counted above as pairs: real "
                  f"{r}, synthetic {y}, test {t} stack(s). Test stacks are predicted slice by "
                  "slice; each stack's figures, per arm and seed, are in "
                  "evaluation_stacks.csv.", ""]
    lines += [f"- {n}" for n in result.notes]
    if result.sizes:
        lines += ["", *study_markdown(result)]
    if seen := seen_markdown(result.runs):
        lines += ["", *seen]
    return "\n".join(lines) + "\n"


def _ci(row: dict[str, Any], m: str) -> str:
    if math.isnan(row.get(f"diff_{m}", math.nan)):
        return "n/a"
    if math.isnan(row[f"diff_{m}_low"]):
        return f"{row[f'diff_{m}']:+.3f} [no interval]"
    return (f"{row[f'diff_{m}']:+.3f} [{row[f'diff_{m}_low']:+.3f}, "
            f"{row[f'diff_{m}_high']:+.3f}]")


def study_markdown(result: EvaluationResult) -> list[str]:
    """The study's section of ``evaluation.md``: the table by number of real pairs, how the
    subsets, intervals and validation curves were made, and how far each curve still moved."""
    s, rows = result.settings, result.sizes
    lines = ["## Against the number of real pairs", "",
             "| real pairs | arm | seeds | " + " | ".join(STUDY_METRICS) + " | "
             + " | ".join(f"paired difference {m} [95% CI]" for m in STUDY_METRICS) + " |",
             "|---|---|---|" + "---|" * (2 * len(STUDY_METRICS))]
    for row in rows:
        figs = [_fmt(row[f"{m}_mean"], row[f"{m}_std"]) for m in STUDY_METRICS]
        diffs = [_ci(row, m) if f"diff_{m}" in row else "" for m in STUDY_METRICS]
        lines.append(f"| {row['n_real'] or '0 (synthetic only)'} | {row['arm']} | "
                     f"{row['n_seeds']} | " + " | ".join(figs + diffs) + " |")
    lines += [
        "",
        "Figures: mean ± standard deviation over seeds of the figures pooled over the test "
        "images. Paired difference: the real + synthetic arm minus the real-only arm, per seed "
        "and test image (each image's own figure; images where it is undefined are left "
        f"out), averaged; the interval is a percentile bootstrap ({N_BOOT} resamples, seeds "
        f"and test images resampled independently, bootstrap seed {BOOT_SEED}, so the same "
        "results give the same interval). Seed s trains size n on the first n real pairs of a "
        f"permutation drawn from (s, {SUBSET_STREAM}): one seed's subsets are nested; the "
        "subsets are in evaluation_runs.csv (real_subset). "
        + ("The loss is plain cross-entropy plus the soft Dice of the object classes (no "
           "class weights)." if result.settings.get("loss") == "dice_ce" else
           "All arms weight the loss with the class frequencies of all real and synthetic "
           "masks."), ""]
    if power := power_notes(rows, result.runs):
        lines += ["What more seeds would buy, where an interval holds 0 (the same bootstrap "
                  "with more seeds drawn from these; the test images' part is what no number "
                  "of seeds narrows):", "", *[f"- {x}" for x in power], ""]
    lines += convergence_markdown(result.runs, s.get("val_every"), s["steps"])
    return lines


def write_outputs(result: EvaluationResult, out: str | Path) -> list[Path]:
    """Write ``evaluation_runs.csv`` (one row per arm and seed), ``evaluation.csv`` (mean and
    std per arm), with test stacks ``evaluation_stacks.csv`` (one row per arm, seed and stack),
    ``evaluation.md`` and ``evaluation.png`` into ``out``; a study adds the number of real pairs
    (``n_real``) to the rows, and :func:`write_study`'s files."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs_csv, sum_csv = out / "evaluation_runs.csv", out / "evaluation.csv"
    seen = [f"synthetic_{m}" for m in RECALLS]
    keys = ["arm", "seed", *METRICS, *RECALLS, *seen, "seconds", "precision"]
    if result.sizes:
        keys[1:1] = ["n_real"]
        keys.append("real_subset")
    with runs_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for run in result.runs:
            on_syn = run.get("on_synthetic") or {}
            r = {"n_real": 0, **{m: math.nan for m in (*METRICS, *RECALLS, *seen)},  # runs
                 **run, **{f"synthetic_{m}": on_syn.get(m, math.nan) for m in RECALLS},
                 "real_subset": ";".join(run.get("real_subset", []))}  # saved before a figure
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in keys})
    with sum_csv.open("w", newline="", encoding="utf-8") as fh:
        w2 = csv.writer(fh)
        w2.writerow(["arm", "n_seeds", *[f"{m}_{x}" for m in METRICS for x in ("mean", "std")]])
        for arm, figs in result.summary.items():
            w2.writerow([arm, result.settings["seeds"],
                         *[f"{v:.6f}" for m in METRICS for v in figs[m]]])
    stack_rows = [{"arm": r["arm"], "n_real": r.get("n_real", 0), "seed": r["seed"], **row}
                  for r in result.runs for row in r.get("stacks", [])]
    stacks_csv = out / "evaluation_stacks.csv"
    if stack_rows:
        stack_keys = ["arm", "seed", "stack", "n_slices", *METRICS]
        if result.sizes:  # which size a row belongs to
            stack_keys[1:1] = ["n_real"]
        with stacks_csv.open("w", newline="", encoding="utf-8") as fh:
            w3 = csv.DictWriter(fh, fieldnames=stack_keys)
            w3.writeheader()
            for row in stack_rows:
                row = {**{m: math.nan for m in METRICS}, **row}  # saved before a figure existed
                w3.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k])
                             for k in stack_keys})
    md = out / "evaluation.md"
    md.write_text(markdown_table(result), encoding="utf-8")
    png = out / "evaluation.png"
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    shown = [m for m in ("dice_interior", "dice_boundary", "dice_background", "boundary_f1")
             if any(not math.isnan(result.summary[a][m][0]) for a in result.summary)]
    width = 0.8 / max(len(result.summary), 1)
    for i, (arm, figs) in enumerate(result.summary.items()):
        xs = np.arange(len(shown)) + i * width
        means = [figs[m][0] for m in shown]
        ax.bar(xs, means, width, label=arm)
        for seed_run in (r for r in result.runs if r["arm"] == arm):
            ax.plot(xs, [seed_run.get(m, math.nan) for m in shown], "k.", ms=4)
    ax.set_xticks(np.arange(len(shown)) + width * (len(result.summary) - 1) / 2, shown)
    ax.set_ylim(0, 1)
    ax.set_ylabel("on real test images (dots: seeds)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    result.files = [runs_csv, sum_csv, *([stacks_csv] if stack_rows else []), md, png]
    if result.sizes:
        result.files += write_study(result, out)
    return result.files


def _csv_value(v: Any) -> Any:
    return f"{v:.6f}" if isinstance(v, float) else v


#: colours of the study's arms in its figures (other arms: matplotlib's cycle)
ARM_COLOURS = {"real": "#7f7f7f", "real+synthetic": "#2ca02c"}


def plot_size_study(ax_abs: Any, ax_diff: Any, rows: list[dict[str, Any]], metric: str,
                    label: str) -> None:
    """One figure of a study on two matplotlib axes: ``metric`` on real test images against
    the number of real pairs for each arm (mean ± std over seeds; the synthetic-only arm is a
    dashed line), and the paired difference real + synthetic - real only with its 95 %
    interval. ``rows`` are ``EvaluationResult.sizes`` (or ``evaluation_sizes.csv`` read back
    as numbers); ``write_study`` and scripts/utility_figure.py both draw with this."""
    def num(row: dict[str, Any], key: str) -> float:
        value = row.get(key, math.nan)
        return math.nan if value in ("", None) else float(value)

    sized = sorted((r for r in rows if int(r["n_real"] or 0)), key=lambda r: int(r["n_real"]))
    sizes = sorted({int(r["n_real"]) for r in sized})
    for i, arm in enumerate(dict.fromkeys(r["arm"] for r in sized)):
        mine = [r for r in sized if r["arm"] == arm]
        ax_abs.errorbar([int(r["n_real"]) for r in mine], [num(r, f"{metric}_mean") for r in mine],
                        yerr=[np.nan_to_num(num(r, f"{metric}_std")) for r in mine], marker="o",
                        capsize=3, color=ARM_COLOURS.get(arm, f"C{i + 2}"),
                        label=f"{arm} only" if arm == "real" else arm)
    for r in rows:
        if not int(r["n_real"] or 0) and not math.isnan(num(r, f"{metric}_mean")):
            ax_abs.axhline(num(r, f"{metric}_mean"), color="#1f77b4", ls="--",
                           label=f"{r['arm']} only")
    ax_abs.set_xticks(sizes)
    ax_abs.set_xlabel("real training pairs")
    ax_abs.set_ylabel(f"{label} on real test images")
    ax_abs.legend(fontsize=8)
    mine = [r for r in sized if not math.isnan(num(r, f"diff_{metric}"))]
    if mine:
        ds = np.array([num(r, f"diff_{metric}") for r in mine])
        lo = np.array([num(r, f"diff_{metric}_low") for r in mine])
        hi = np.array([num(r, f"diff_{metric}_high") for r in mine])
        ax_diff.errorbar([int(r["n_real"]) for r in mine], ds,
                         yerr=np.nan_to_num(np.array([ds - lo, hi - ds])), marker="o",
                         capsize=4, color=ARM_COLOURS["real+synthetic"])
    ax_diff.axhline(0, color="k", lw=0.8)
    ax_diff.set_xticks(sizes)
    ax_diff.set_xlabel("real training pairs")
    ax_diff.set_ylabel(f"{label}: with synthetic - real only")
    ax_diff.set_title("paired difference, 95% bootstrap CI (seeds x test images)", fontsize=9)


def write_study(result: EvaluationResult, out: Path) -> list[Path]:
    """The study's files: ``evaluation_sizes.csv`` (one row per size and arm),
    ``evaluation_sizes.png`` (figures against real pairs; paired differences with their
    intervals), ``evaluation_curves.csv`` and ``evaluation_curves.png`` (the real-only arm's
    training loss and held-out figures against steps)."""
    from matplotlib.figure import Figure

    sizes_csv = out / "evaluation_sizes.csv"
    keys = ["n_real", "arm", "n_seeds",
            *[f"{m}_{x}" for m in STUDY_METRICS for x in ("mean", "std")],
            *[f"diff_{m}{x}" for m in STUDY_METRICS for x in ("", "_low", "_high", "_pairs")]]
    with sizes_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in result.sizes:
            w.writerow({k: _csv_value(row.get(k, "")) for k in keys})
    curves_csv = out / "evaluation_curves.csv"
    ckeys = ["n_real", "seed", "step", "train_loss", *[f"val_{m}" for m in STUDY_METRICS],
             "val_source"]
    curve_runs = [r for r in result.runs if r.get("curve")]
    with curves_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=ckeys)
        w.writeheader()
        for r in curve_runs:
            for point in r["curve"]:
                w.writerow({k: _csv_value(v) for k, v in {
                    "n_real": r["n_real"], "seed": r["seed"], "val_source": r["val_source"],
                    **{k: point.get(k, "") for k in ckeys[2:-1]}}.items()})

    rows = result.sizes
    sizes_png = out / "evaluation_sizes.png"
    fig = Figure(figsize=(10, 3.5 * len(STUDY_METRICS)), dpi=100)
    for k, m in enumerate(STUDY_METRICS):
        ax_abs = fig.add_subplot(len(STUDY_METRICS), 2, 2 * k + 1)
        ax_diff = fig.add_subplot(len(STUDY_METRICS), 2, 2 * k + 2)
        plot_size_study(ax_abs, ax_diff, rows, m, m)
        ax_abs.set_title(f"{m} (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(sizes_png)

    curves_png = out / "evaluation_curves.png"
    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_val = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ns = sorted({r["n_real"] for r in curve_runs})
    for j, n in enumerate(ns):
        for i, r in enumerate(x for x in curve_runs if x["n_real"] == n):
            steps = [p["step"] for p in r["curve"]]
            label = f"{n} real" if i == 0 else None
            ax_loss.plot(steps, [p["train_loss"] for p in r["curve"]], color=f"C{j}",
                         marker=".", label=label)
            if "val_boundary_f1" in r["curve"][0]:
                ax_val.plot(steps, [p["val_boundary_f1"] for p in r["curve"]], color=f"C{j}",
                            marker=".", label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (mean since the last point)")
    ax_loss.set_title("real-only arm: training loss (lines: seeds)", fontsize=9)
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("boundary F1 on held-out real pairs")
    ax_val.set_title("real-only arm: held-out real pairs not in the subset", fontsize=9)
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not ax_val.lines:
        ax_val.text(0.5, 0.5, "no held-out real pair at any size", ha="center",
                    transform=ax_val.transAxes)
    fig.tight_layout()
    fig.savefig(curves_png)
    return [sizes_csv, sizes_png, curves_csv, curves_png]
