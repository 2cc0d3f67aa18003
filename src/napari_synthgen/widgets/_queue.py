"""The Curate widget's queue items and the work it runs off the GUI thread.

A queue item holds a candidate, its decision and its quality figures; a (Z, Y, X) pair is one
item (decided whole, figures of :func:`.curation.stacks.stack_figures`). The workers read a
generated folder (:func:`read_folder`), compute figures (:func:`figures_work`), read a
reference (:func:`read_reference`, from a folder or a model file's header:
:func:`model_reference`) and record bulk decisions (:func:`bulk_work`); they use core code only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..curation import ExportSession
from ..curation.stacks import figures_of, is_stack, pair_spacing
from ..io import read_image, read_mask
from ..quality import ReferenceStats
from ._bus import ModelAnnouncement
from ._figures import Curves, curves
from ._worker import Progress

if TYPE_CHECKING:
    import napari


@dataclass(eq=False)  # compared by identity: the queue is re-sorted, arrays never compared
class QueueItem:
    """One candidate in the queue; arrays of folder items are read when shown."""

    name: str
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    image_path: Path | None = None
    mask_path: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None
    record_id: str | None = None
    order: int = 0
    figures: dict[str, Any] | None = None  # None while the worker computes them
    curves: Curves | None = None
    figures_error: str | None = None

    @property
    def score(self) -> float:
        """The combined quality score, NaN while unknown (no figures or no reference)."""
        value = (self.figures or {}).get("score")
        return float(value) if isinstance(value, (int, float)) else float("nan")

    def flagged(self, threshold: float) -> bool:
        """Scored below ``threshold`` (an unscored candidate is never flagged)."""
        return math.isfinite(self.score) and self.score < threshold

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The image and its mask (a folder item's are read the first time and kept)."""
        if self.image is None:
            self.image = read_image(self.image_path)
        if self.mask is None:
            self.mask = read_mask(self.mask_path)
        return self.image, self.mask

    def peek(self) -> tuple[np.ndarray, np.ndarray]:
        """The image and its mask without keeping a folder item's in memory (for workers that
        go through a whole queue)."""
        image = self.image if self.image is not None else read_image(self.image_path)
        mask = self.mask if self.mask is not None else read_mask(self.mask_path)
        return image, mask

    def spacing(self, image: np.ndarray) -> tuple[float, float, float] | None:
        """The voxel spacing of a (Z, Y, X) item, as its files record it (None for 2-D items
        and stacks whose files record none)."""
        return pair_spacing(self.image_path, self.mask_path) if is_stack(image) else None


def item_curves(image: np.ndarray, mask: np.ndarray) -> Curves:
    """The quality panel's curves; a stack's are pooled over its slices (histograms of all
    its pixels, the mean of its slices' spectra)."""
    if not is_stack(image):
        return curves(image, mask)
    from ..quality import class_histograms, log_power_spectrum

    width = image.shape[-1]
    hist = class_histograms(image.reshape(-1, width), mask.reshape(-1, width))
    sums = hist.sum(axis=1, keepdims=True)
    hist = np.where(sums > 0, hist / np.maximum(sums, 1.0), 0.0)
    return Curves(hist, np.mean([log_power_spectrum(s) for s in image], axis=0))


def read_folder(folder: Path) -> list[QueueItem]:
    """Worker: a queue item per image/mask pair of a generated folder, with its provenance from
    the folder's generate log (the arrays are read when shown). Runs in a worker: the log
    reader lives in ``generate``, which imports torch."""
    from ..generate import read_provenance
    from ..io import find_pairs

    root = Path(folder)
    pairs = find_pairs(root)
    prov = read_provenance(root)
    items = []
    for pair in pairs:
        p = dict(prov.get(f"images/{pair.image.name}", {}))
        p.setdefault("source_mask", str(pair.mask))
        p.pop("image", None)
        p.pop("mask", None)
        p["generated_file"] = str(pair.image)
        items.append(QueueItem(pair.stem, image_path=pair.image, mask_path=pair.mask,
                               provenance=p))
    return items


def model_reference(announcement: ModelAnnouncement) -> ReferenceStats | None:
    """The reference statistics a model file carries from its training data (None if none).

    Reads only the ``.safetensors`` header, not the weights; other files carry none.
    """
    from ..quality import reference_from_metadata

    meta = getattr(announcement, "metadata", None)
    if meta is None:
        path = Path(announcement.path)
        if path.suffix.lower() != ".safetensors" or not path.is_file():
            return None
        import json

        from safetensors import safe_open

        from ..models.checkpoints import METADATA_KEY

        with safe_open(str(path), framework="numpy") as fh:
            text = (fh.metadata() or {}).get(METADATA_KEY)
        meta = json.loads(text) if text else None
    return reference_from_metadata(meta)


def read_reference(fn: Callable[[Any], ReferenceStats | None], arg: Any
                    ) -> tuple[ReferenceStats | None, str | None]:
    """Worker: the reference, or why it cannot be read (shown beside the field: a folder being
    typed is not a paired folder yet, and that is no reason for an error notification)."""
    try:
        return fn(arg), None
    except Exception as exc:
        return None, str(exc) or type(exc).__name__


def figures_work(items: list[QueueItem], reference: ReferenceStats | None
                  ) -> Iterator[tuple[QueueItem, dict[str, Any] | None, Curves | None, str | None]]:
    """Worker: each item's figures and curves; a sample that fails gets its error instead."""
    for n, item in enumerate(items):
        try:
            image, mask = item.peek()
            fig, crv, err = figures_of(image, mask, reference=reference), item_curves(
                image, mask), None
        except Exception as exc:  # one bad sample must not stop the others
            fig, crv, err = None, None, str(exc) or type(exc).__name__
        yield item, fig, crv, err
        yield Progress(n + 1, len(items))


def item_quality(item: QueueItem, image: np.ndarray, mask: np.ndarray,
                 reference: ReferenceStats | None, source: str) -> dict[str, Any]:
    """The figures the manifest records for ``item``, with the reference they used: its own,
    or computed now for a candidate decided before its figures arrived (the basic ones and why,
    for a sample whose figures cannot be computed, such as one too small for a spectrum)."""
    from ..quality import basic_figures

    named = {"reference": source or "none"}
    figures = item.figures
    if figures is None:
        try:
            figures = figures_of(image, mask, reference=reference)
        except Exception as exc:
            return {**basic_figures(image, mask), **named, "figures_error": str(exc)}
    return {**figures, **named}


def bulk_work(session: ExportSession, decision: str,
               entries: list[tuple[QueueItem, dict[str, Any]]],
               reference: ReferenceStats | None, source: str) -> Iterator[Any]:
    """Worker: record one decision per item, with its figures (each record is on disk when it
    is yielded); reading the samples and writing them never happens on the GUI thread."""
    fn = session.accept if decision == "accept" else session.reject
    for n, (item, provenance) in enumerate(entries):
        image, mask = item.peek()
        quality = item_quality(item, image, mask, reference, source)
        yield item, fn(image, mask, provenance=provenance, quality=quality,
                       spacing=item.spacing(image))
        yield Progress(n + 1, len(entries))


def canvas_text(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's text overlay (``viewer.canvas.overlays["text"]`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and "text" in getattr(canvas, "overlays", {}):
        return canvas.overlays["text"]
    return viewer.text_overlay

