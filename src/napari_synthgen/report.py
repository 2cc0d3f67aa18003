"""Quality report of a folder of synthetic samples against real ones (``napari-synthgen report``).

Writes ``report.csv`` (one row per sample: ``name`` = file stem, ``score``, ``flagged`` and every
figure of :func:`.quality.sample_figures`, plus ``diversity`` among samples of the same mask),
``report.png`` (sample grid with masks, per-class grey-level histograms real vs synthetic,
power spectra, class fractions, score distribution) and ``report.md`` (summary, flagged samples).

Samples that are (Z, Y, X) stacks are scored slice by slice (rows ``<stack>_zNNN``) and their
z-consistency is added against the real reference stack (:mod:`.report_z`: ``report_z.csv``,
``report_z_pairs.csv``, ``report_z.png`` and a Markdown section). A 2-D sample set gives
exactly the outputs it gave before.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import quality
from .masks import CLASS_NAMES, N_CLASSES, PALETTE, MaskSource

#: Samples scoring below this are flagged (for a look, not for rejection).
DEFAULT_FLAG_BELOW: float = 0.5
#: Training steps of the mask-consistency segmenter (0: no consistency figure).
DEFAULT_CONSISTENCY_STEPS: int = 150

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]

#: CSV columns that come first, in this order; the other figures follow sorted by name.
LEADING: tuple[str, ...] = ("name", "score", "flagged", "group", "group_size", "diversity")


@dataclass
class ReportResult:
    """The per-sample rows, the files written and what the reference was."""

    rows: list[dict[str, Any]]
    files: list[Path]
    reference: quality.ReferenceStats
    segmenter: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    zstacks: list[Any] = field(default_factory=list)  # report_z.ZStack, stacks only
    z_reference: str = ""


def _mask_key(mask: np.ndarray) -> str:
    from .io import sha256_array

    return sha256_array(np.ascontiguousarray(mask))


def score_samples(samples: list[tuple[str, np.ndarray, np.ndarray]],
                  reference: quality.ReferenceStats, *,
                  real: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
                  segmenter: Any = None, flag_below: float = DEFAULT_FLAG_BELOW,
                  progress: Progress | None = None,
                  saved: dict[str, dict[str, Any]] | None = None,
                  on_row: Callable[[dict[str, Any]], None] | None = None
                  ) -> list[dict[str, Any]]:
    """Figures of every ``(name, image, mask)`` sample, with SSIM to the real image whose mask is
    identical (``real``), mask consistency (``segmenter``) and diversity per mask group.

    ``saved`` rows (by name, from an interrupted run) are reused; ``on_row`` gets each row
    computed now, as soon as it is done."""
    real_by_mask = {_mask_key(m): img for _, img, m in (real or [])}
    rows: list[dict[str, Any]] = []
    groups: dict[str, list[int]] = {}
    for i, (name, image, mask) in enumerate(samples):
        key = _mask_key(mask)
        groups.setdefault(key, []).append(i)
        if saved and name in saved:
            rows.append(dict(saved[name]))
        else:
            paired = real_by_mask.get(key)
            figs = quality.sample_figures(
                image, mask, reference=reference,
                paired_real=paired if paired is not None and paired.shape == image.shape
                else None,
                predicted=None if segmenter is None else segmenter.predict(image))
            rows.append({"name": name, **figs, "group": key[:10]})
            if on_row is not None:
                on_row(rows[-1])
        if progress is not None:
            progress("figures", i + 1, len(samples))
    for members in groups.values():
        div = quality.diversity([samples[i][1] for i in members[:10]])
        for i in members:
            rows[i]["group_size"] = len(members)
            rows[i]["diversity"] = div
    for row in rows:
        row.setdefault("ssim_real", math.nan)
        row["flagged"] = bool(not (row["score"] >= flag_below))
    return rows


def _read_folder(folder: str | Path, read_as: MaskSource = "auto", boundary_width: int = 2
                 ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from .io import find_pairs, read_image, read_mask

    return [(p.stem, read_image(p.image), read_mask(p.mask, read_as,
                                                     boundary_width=boundary_width))
            for p in find_pairs(folder)]


def load_reference(source: str | Path, *, read_as: MaskSource = "auto",
                   boundary_width: int = 2
                   ) -> tuple[quality.ReferenceStats, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Reference statistics and real pairs from a paired folder of real images, or the
    statistics alone from a model checkpoint's metadata (no real pairs then: no SSIM to a real
    image and no mask-consistency figure). (Z, Y, X) real pairs count slice by slice.
    ``read_as`` says how the folder's masks are read (:func:`masks.coerce_mask`)."""
    stats, real, _ = _load_reference(source, read_as, boundary_width)
    return stats, real


def _load_reference(source: str | Path, read_as: MaskSource = "auto",
                    boundary_width: int = 2) -> tuple[
        quality.ReferenceStats, list[tuple[str, np.ndarray, np.ndarray]],
        list[tuple[str, np.ndarray, np.ndarray]]]:
    """:func:`load_reference`, and the folder's pairs as read (stacks whole)."""
    from .io import is_paired_folder
    from .report_z import split_stacks

    if is_paired_folder(source):
        as_read = _read_folder(source, read_as, boundary_width)
        real, _ = split_stacks(as_read)
        return quality.reference_from_pairs(((im, m) for _, im, m in real),
                                            sources=[n for n, _, _ in real]), real, as_read
    from .registry import load_model

    try:
        meta = load_model(source).info.metadata
    except Exception as exc:
        raise ValueError(f"{source}: the reference is a paired folder of real images "
                         f"(images/, masks/) or a model checkpoint; this is neither ({exc})."
                         ) from exc
    stats = quality.reference_from_metadata(meta)
    if stats is None:
        raise ValueError(f"the model {source} records no reference statistics (it was trained "
                         "before they were stored, or is a reference checkpoint); give a "
                         "paired folder of real images instead.")
    return stats, [], []


def quality_report(samples: str | Path, reference: str | Path, out: str | Path, *,
                   consistency_steps: int = DEFAULT_CONSISTENCY_STEPS, device: str = "cpu",
                   flag_below: float = DEFAULT_FLAG_BELOW, seed: int = 0,
                   progress: Progress | None = None, read_as: MaskSource = "auto",
                   boundary_width: int = 2) -> ReportResult:
    """Score the paired folder ``samples`` against the real paired folder ``reference`` and
    write ``report.csv``, ``report.png`` and ``report.md`` into ``out``.

    The mask-consistency segmenter trains ``consistency_steps`` steps on the reference pairs
    (:mod:`.segmenter`, seed ``seed``); 0 leaves that figure out of the score. ``reference``
    may also be a model checkpoint whose metadata holds reference statistics
    (:func:`load_reference`). Samples that are (Z, Y, X) stacks add the z-consistency outputs
    (:mod:`.report_z`). ``read_as`` and ``boundary_width`` say how the reference folder's masks
    are read (e.g. ``binary`` for 0/255 organelle masks); the samples hold class masks.
    """
    from . import report_z
    from .results import check_writable, open_results

    start = time.perf_counter()
    out = check_writable(out)
    ref, real, real_as_read = _load_reference(reference, read_as, boundary_width)
    syn, syn_stacks = report_z.split_stacks(_read_folder(samples))
    fixed = {"samples": fingerprint(syn), "reference": _reference_id(reference, real),
             "consistency_steps": consistency_steps, "seed": seed, "device": device,
             "flag_below": flag_below}
    if read_as != "auto":  # absent for class masks: old reports match
        fixed["read_as"] = [read_as, boundary_width]
    store = _RowStore(out, resume=open_results(out, "report", fixed, REPORT_OUTPUTS))
    seg = None
    if consistency_steps > 0 and real:
        from .segmenter import SegmenterConfig, train_on_pairs

        cfg = SegmenterConfig(steps=consistency_steps, seed=seed, device=device)
        seg = _Lazy(lambda: train_on_pairs(
            [(im, m) for _, im, m in real], cfg,
            progress=None if progress is None else
            (lambda d, t: progress("consistency segmenter", d, t))))
    rows = score_samples(syn, ref, real=real, segmenter=seg, flag_below=flag_below,
                         progress=progress, saved=store.rows, on_row=store.add)
    settings = {"samples": str(samples), "reference": str(reference), "n_samples": len(syn),
                "n_reference": len(real), "consistency_steps": consistency_steps,
                "flag_below": flag_below, "seconds": round(time.perf_counter() - start, 1)}
    result = ReportResult(rows, [], ref, None if seg is None else store.segmenter(seg),
                          settings)
    files = [write_csv(rows, out / "report.csv"),
             write_figure(rows, syn, real, ref, out / "report.png", flag_below=flag_below)]
    if syn_stacks:
        if progress is not None:
            progress("z-consistency", 0, 1)
        ref_stacks, result.z_reference = report_z.reference_stacks(real_as_read)
        result.zstacks = report_z.measure(syn_stacks, ref_stacks)
        settings["n_stacks"] = len(syn_stacks)
        files += [*report_z.write_csvs(result.zstacks, out),
                  report_z.write_figure(result.zstacks, out / "report_z.png")]
        if progress is not None:
            progress("z-consistency", 1, 1)
    result.files = [*files[:2], write_markdown(result, out / "report.md"), *files[2:]]
    return result


#: Result files of a report (kept when settings differ).
REPORT_OUTPUTS: tuple[str, ...] = ("report.csv", "report.png", "report.md", "report_rows.jsonl",
                                   "report_z.csv", "report_z_pairs.csv", "report_z.png")


def fingerprint(items: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """A short hash of named pairs (see :func:`results.fingerprint`)."""
    from .results import fingerprint as _fingerprint

    return _fingerprint(items)


def _reference_id(source: str | Path, real: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    """What the reference was: its pairs' fingerprint, or the checkpoint file's SHA-256."""
    from .io import sha256_file

    return fingerprint(real) if real else sha256_file(source)[:16]


class _Lazy:
    """The consistency segmenter, trained on first use: a resumed report whose samples were
    all scored needs none."""

    def __init__(self, train: Callable[[], Any]) -> None:
        self._train, self.trained = train, None

    def predict(self, image: np.ndarray) -> np.ndarray:
        if self.trained is None:
            self.trained = self._train()
        return self.trained.predict(image)


class _RowStore:
    """Each scored sample's row, appended to ``out/report_rows.jsonl`` as it is computed."""

    def __init__(self, out: Path, *, resume: bool) -> None:
        import json

        self.path, self.seg_path = out / "report_rows.jsonl", out / "report_segmenter.json"
        self.rows: dict[str, dict[str, Any]] = {}
        if resume and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:  # a line a killed run left half-written is scored again
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "name" in row:
                    self.rows[row["name"]] = row
        # rewrite the good rows only, so a half-written last line never joins the next one
        with self.path.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in self.rows.values())

    def add(self, row: dict[str, Any]) -> None:
        import json

        plain = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(plain) + "\n")

    def segmenter(self, lazy: _Lazy) -> dict[str, Any] | None:
        """What the consistency segmenter was: trained now, or by the run that scored the
        saved rows."""
        from .results import load_json, save_json

        if lazy.trained is not None:
            info = lazy.trained.describe()
            save_json(self.seg_path, info)
            return info
        return load_json(self.seg_path)


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row per sample: the :data:`LEADING` columns, then every other figure by name."""
    keys = sorted({k for r in rows for k in r} - set(LEADING))
    cols = [*LEADING, *keys]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k, "")) for k in cols})
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, bool | np.bool_):
        return int(bool(v))
    if isinstance(v, float | np.floating):
        return "" if math.isnan(float(v)) else f"{float(v):.6g}"
    return v


def write_figure(rows: list[dict[str, Any]], samples: list[tuple[str, np.ndarray, np.ndarray]],
                 real: list[tuple[str, np.ndarray, np.ndarray]],
                 reference: quality.ReferenceStats, path: Path, *,
                 flag_below: float = DEFAULT_FLAG_BELOW) -> Path:
    """The report figure (matplotlib's Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = sorted(range(len(rows)), key=lambda i: _sort_key(rows[i]["score"]))
    shown = order[:4] + [i for i in order[-4:] if i not in order[:4]]
    fig = Figure(figsize=(16, 9.5), dpi=90)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 8, height_ratios=[1, 1, 1.4], left=0.04, right=0.98, top=0.95,
                            bottom=0.07, hspace=0.3)
    for col, i in enumerate(shown):
        name, image, mask = samples[i]
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(quality.to_unit(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        title = name if len(name) <= 24 else "…" + name[-23:]
        ax.set_title(f"{title}\nscore {rows[i]['score']:.2f}", fontsize=7,
                     color="red" if rows[i]["flagged"] else "black")
        ax.axis("off")
        ax = fig.add_subplot(grid[1, col])
        ax.imshow(PALETTE[mask], interpolation="nearest")
        ax.axis("off")
    fig.text(0.005, 0.62, "lowest and highest scores: image above, mask below", rotation=90,
             fontsize=7, va="center")
    bottom = grid[2, :].subgridspec(1, 5, wspace=0.35)
    centres = quality.bin_centres()
    ax = fig.add_subplot(bottom[0, 0])
    syn_hist = np.zeros((N_CLASSES, quality.HIST_BINS))
    for _, image, mask in samples:
        syn_hist += quality.class_histograms(image, mask)
    colours = PALETTE.astype(float) / 255.0
    colours[0] = (0.4, 0.4, 0.4)
    for c, name in enumerate(CLASS_NAMES):
        r = reference.histogram(c)
        if r.sum() > 0:
            ax.plot(centres, r, color=colours[c], lw=1.5, label=f"real {name}")
        s = syn_hist[c]
        if s.sum() > 0:
            ax.plot(centres, s / s.sum(), color=colours[c], lw=1, ls="--",
                    label=f"synthetic {name}")
    ax.set_title("grey levels per class", fontsize=9)
    ax.set_xlabel("grey level (0..1)", fontsize=8)
    ax.legend(fontsize=6)
    ax = fig.add_subplot(bottom[0, 1])
    freqs = quality.spectrum_frequencies()
    ax.plot(freqs, reference.log_spectrum, "k", lw=1.5, label="real (mean)")
    spectra = np.array([quality.log_power_spectrum(im) for _, im, _ in samples])
    ax.plot(freqs, spectra.mean(axis=0), "C1--", lw=1, label="synthetic (mean)")
    if order:
        ax.plot(freqs, spectra[order[0]], "C3:", lw=1, label="lowest score")
    ax.set_title("radial power spectrum", fontsize=9)
    ax.set_xlabel("cycles / px", fontsize=8)
    ax.set_ylabel("log10 power (normalised)", fontsize=8)
    ax.legend(fontsize=6)
    ax = fig.add_subplot(bottom[0, 2])
    xs = np.arange(N_CLASSES)
    syn_frac = np.array([[r[f"frac_{n}"] for n in CLASS_NAMES] for r in rows])
    ax.bar(xs - 0.2, reference.class_fractions, 0.4, label="real", color="0.3")
    ax.bar(xs + 0.2, syn_frac.mean(axis=0), 0.4, yerr=syn_frac.std(axis=0), label="synthetic",
           color="C1")
    ax.set_xticks(xs, CLASS_NAMES, fontsize=7)
    ax.set_title("class fractions", fontsize=9)
    ax.legend(fontsize=6)
    ax = fig.add_subplot(bottom[0, 3])
    scores = [r["score"] for r in rows if not math.isnan(r["score"])]
    ax.hist(scores, bins=20, range=(0, 1), color="C0")
    ax.axvline(flag_below, color="red", lw=1)
    ax.set_title("score (higher = closer to real)", fontsize=9)
    ax = fig.add_subplot(bottom[0, 4])
    for key, label in (("wd_mean", "grey-level distance"), ("spectrum_dist", "spectrum dist"),
                       ("consistency_dice", "consistency Dice")):
        vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        if vals:
            ax.hist(vals, bins=20, histtype="step", label=label)
    ax.set_title("figures", fontsize=9)
    ax.legend(fontsize=6)
    fig.savefig(path)
    return path


def _sort_key(score: float) -> float:
    return -1.0 if math.isnan(score) else score


def write_markdown(result: ReportResult, path: Path) -> Path:
    """Summary: counts, score spread, flagged samples, the lowest scores, how the score works."""
    rows, s = result.rows, result.settings
    if not rows:
        path.write_text("# Quality report\n\nNo samples.\n", encoding="utf-8")
        return path
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    flagged = [r for r in rows if r["flagged"]]
    lines = [
        "# Quality report", "",
        f"{s['n_samples']} samples from `{s['samples']}` against `{s['reference']}` "
        f"({result.reference.n_images} real images; {s['seconds']} s).", "",
        f"- score: median {np.nanmedian(scores):.3f}, min {np.nanmin(scores):.3f}, "
        f"max {np.nanmax(scores):.3f}",
        f"- flagged (score < {s['flag_below']}): {len(flagged)} of {len(rows)}",
    ]
    if result.segmenter is not None:
        seg = result.segmenter
        lines.append(f"- mask consistency: small U-Net, {seg['config']['steps']} steps on the "
                     f"real pairs, precision {seg['precision']} ({seg['precision_rule']}), "
                     f"{seg['seconds']} s")
    else:
        lines.append("- mask consistency: not computed (consistency steps 0, or no real pairs)")
    lines += ["", "The score is for sorting and flagging, never to decide alone. Weights: "
              + ", ".join(f"{k} {v}" for k, v in quality.SCORE_WEIGHTS.items())
              + " (see napari_synthgen.quality.SCORE_WEIGHTS).", "",
              "## Lowest scores", "",
              "| name | score | wd_mean | spectrum_dist | peak_excess | consistency_dice |",
              "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: _sort_key(r["score"]))[:10]:
        lines.append("| " + " | ".join(
            [str(r["name"])] + [_md(r.get(k)) for k in ("score", "wd_mean", "spectrum_dist",
                                                        "peak_excess", "consistency_dice")])
            + " |")
    if flagged:
        lines += ["", "## Flagged", "", ", ".join(str(r["name"]) for r in flagged)]
    if result.zstacks:
        from .report_z import markdown

        lines += markdown(result.zstacks, result.z_reference)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _md(v: Any) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if math.isnan(f) else f"{f:.3f}"
