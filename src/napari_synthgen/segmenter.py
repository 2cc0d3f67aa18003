"""The one small segmenter: mask consistency in the quality figures and the `evaluate` arms.

A 3-level U-Net with group norm (no batch-norm running statistics, which collapsed a short
run in the first manual check), trained on random crops with flips and 90-degree rotations,
with one of two losses (:data:`LOSSES`): class-weighted cross-entropy (the first, and the
default), or nnU-Net's cross-entropy plus soft Dice of the object classes, which does not move
the decision threshold: with sparse organelles, inverse-frequency weights (0.35 : 6.4 : 10 on
the VNC mitochondria) make the weighted loss call a pixel an object at a few percent
probability, so it marks every dark patch (precision 0.44, recall 0.90 on a test slice;
scripts/object_calls.py).
Deterministic given the seed: crops are a pure function of (seed, step), weights start from
``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .masks import N_CLASSES, validate_mask

#: Class weights from inverse class frequency are clipped to this range (thin boundary rings
#: are about 1% of the pixels; an unclipped weight of 100 makes training unstable).
WEIGHT_RANGE: tuple[float, float] = (0.1, 10.0)
#: The segmenter's losses: ``weighted_ce``, cross-entropy weighted by inverse class frequency
#: (:func:`class_weights`); ``dice_ce``, plain cross-entropy plus the soft Dice of the object
#: classes over the batch (nnU-Net's default: batch Dice, background left out).
LOSSES: tuple[str, ...] = ("weighted_ce", "dice_ce")
#: the classes whose soft Dice ``dice_ce`` adds (interior, boundary): nnU-Net leaves out the
#: background
DICE_CLASSES: tuple[int, ...] = (1, 2)


def _torch() -> Any:
    import torch

    return torch


def build_unet(*, base: int = 16, levels: int = 3, in_channels: int = 1,
               n_classes: int = N_CLASSES) -> Any:
    """A small U-Net: ``levels`` down-samplings, ``base`` channels at full resolution, group
    norm and ReLU, bilinear up-sampling with skip connections."""
    torch = _torch()
    nn = torch.nn

    def block(cin: int, cout: int) -> Any:
        groups = max(1, min(8, cout // 4))
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout),
            nn.ReLU(inplace=True))

    class SmallUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [base * 2**i for i in range(levels + 1)]
            self.down = nn.ModuleList(
                [block(in_channels, chans[0])]
                + [block(chans[i], chans[i + 1]) for i in range(levels)])
            self.up = nn.ModuleList(
                [block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels))])
            self.head = nn.Conv2d(chans[0], n_classes, 1)
            self.levels = levels

        def forward(self, x: Any) -> Any:
            skips = []
            for i, layer in enumerate(self.down):
                x = layer(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            x = skips.pop()
            for layer in self.up:
                skip = skips.pop()
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                              align_corners=False)
                x = layer(torch.cat([x, skip], dim=1))
            return self.head(x)

    return SmallUNet()


def normalise(image: np.ndarray) -> np.ndarray:
    """Grey levels on the unit scale, then zero mean and unit std per image (float32): the
    segmenter sees contrast, not the scanner's absolute grey levels."""
    from .quality import to_unit

    unit = to_unit(image)
    std = float(unit.std())
    return ((unit - unit.mean()) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def class_weights(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Cross-entropy weights from inverse class frequency: ``(1 / n_present) / fraction``, clipped
    to :data:`WEIGHT_RANGE`; 1 for classes absent from every mask."""
    counts = np.zeros(N_CLASSES, dtype=np.float64)
    for m in masks:
        counts += np.bincount(np.asarray(m).ravel(), minlength=N_CLASSES)[:N_CLASSES]
    present = counts > 0
    w = np.ones(N_CLASSES)
    if present.any():
        frac = counts[present] / counts.sum()
        w[present] = np.clip((1.0 / present.sum()) / frac, *WEIGHT_RANGE)
    return w


@dataclass
class SegmenterConfig:
    """Budget and shape of one training run (the same for every arm of an evaluation)."""

    steps: int = 150
    batch_size: int = 4
    crop: int = 128
    lr: float = 2e-3
    base: int = 16
    levels: int = 3
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    threads: int | None = None
    #: one of :data:`LOSSES`
    loss: str = "weighted_ce"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The label of a pixel that teaches nothing (``CrossEntropyLoss``'s ``ignore_index``).
IGNORE = -100


def check_loss(loss: str) -> None:
    """Refuse a loss that is not one of :data:`LOSSES`, naming them."""
    if loss not in LOSSES:
        raise ValueError(f"unknown segmenter loss {loss!r}; choose from {', '.join(LOSSES)}.")


def soft_dice_loss(logits: Any, labels: Any, classes: Sequence[int] = DICE_CLASSES,
                   smooth: float = 1e-5) -> Any:
    """1 minus the mean soft Dice of ``classes`` over the whole batch (nnU-Net's batch Dice);
    pixels labelled :data:`IGNORE` count for nothing. A class absent from the batch scores
    ``smooth / (predicted + smooth)``, so predicting it there costs."""
    torch = _torch()
    probs = torch.softmax(logits.float(), dim=1)
    valid = (labels != IGNORE).unsqueeze(1).float()
    idx = torch.tensor(list(classes), device=logits.device)
    p = probs.index_select(1, idx) * valid
    y = (labels.unsqueeze(1) == idx.view(1, -1, 1, 1)).float() * valid
    inter = (p * y).sum(dim=(0, 2, 3))
    denom = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


@dataclass
class Pool:
    """Training pairs held in memory: normalised images (float16 to halve the memory) and masks.

    ``ignore`` lists classes whose pixels teach nothing (their loss is left out): the classes a
    generator draws badly, so that its pairs teach only what they draw well. ``ignore_pixels``
    (one boolean array per image, True: teaches nothing) leaves out single pixels, e.g. the
    objects a generator painted where its mask has none.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str] = field(default_factory=list)
    ignore: tuple[int, ...] = ()
    ignore_pixels: list[np.ndarray] | None = None

    @property
    def ignores(self) -> bool:
        """Whether any pixel of this pool may teach nothing."""
        return bool(self.ignore) or self.ignore_pixels is not None

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                   names: Sequence[str] | None = None) -> Pool:
        """Validate and normalise ``(image, mask)`` pairs (2-D, same shape)."""
        images, masks = [], []
        for i, (image, mask) in enumerate(pairs):
            m = validate_mask(mask, name=f"mask {names[i] if names else i}")
            img = normalise(image)
            if img.shape != m.shape:
                raise ValueError(f"pair {names[i] if names else i}: image {img.shape} and mask "
                                 f"{m.shape} differ in shape.")
            images.append(img.astype(np.float16))
            masks.append(m)
        return cls(images, masks, list(names or []))

    def __len__(self) -> int:
        return len(self.images)


def _crop_batch(pool: Pool, n: int, crop: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random crops with flips and rotations (reflect-padded when an image is smaller)."""
    xs = np.empty((n, 1, crop, crop), np.float32)
    ys = np.empty((n, crop, crop), np.int64)
    for b in range(n):
        i = int(rng.integers(len(pool)))
        img, m = pool.images[i], pool.masks[i]
        # the pixels left out travel with the mask as IGNORE (same crop, rotation and flip)
        if pool.ignore_pixels is not None:
            m = np.where(pool.ignore_pixels[i], IGNORE, m.astype(np.int64))
        ph, pw = max(crop - img.shape[0], 0), max(crop - img.shape[1], 0)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
            m = np.pad(m, ((0, ph), (0, pw)), mode="reflect")
        y = int(rng.integers(img.shape[0] - crop + 1))
        x = int(rng.integers(img.shape[1] - crop + 1))
        ci, cm = img[y:y + crop, x:x + crop], m[y:y + crop, x:x + crop]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        ci, cm = np.rot90(ci, k), np.rot90(cm, k)
        if flip:
            ci, cm = ci[:, ::-1], cm[:, ::-1]
        xs[b, 0], ys[b] = ci, cm
    if pool.ignore:
        ys[np.isin(ys, pool.ignore)] = IGNORE
    return xs, ys


#: ``progress(done, total)`` after each training step.
StepCallback = Callable[[int, int], None]
#: ``watch(done, mean_loss, segmenter)`` every ``watch_every`` steps: the steps done, the mean
#: training loss since the last call, and the network as it is (a :class:`Segmenter` view).
WatchCallback = Callable[[int, float, "Segmenter"], None]


@dataclass
class Phase:
    """Part of a training run: ``steps`` steps drawing ``mix`` of each batch from ``secondary``
    (the rest from ``primary``)."""

    steps: int
    primary: Pool | None
    secondary: Pool | None = None
    mix: float = 0.0


class Segmenter:
    """A trained small U-Net with what it was trained with (config, precision and its rule)."""

    def __init__(self, net: Any, config: SegmenterConfig, precision: str, precision_rule: str,
                 weights: np.ndarray, seconds: float) -> None:
        self.net, self.config = net, config
        self.precision, self.precision_rule = precision, precision_rule
        self.weights, self.seconds = weights, seconds

    #: Images with more pixels than this are segmented in overlapping tiles.
    MAX_PIXELS: int = 1024 * 1024

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The class mask the segmenter sees in a 2-D image: one forward pass up to
        :attr:`MAX_PIXELS`, larger images in overlapping tiles whose borders are discarded."""
        x = normalise(image)
        h, w = x.shape
        if h * w <= self.MAX_PIXELS:
            return self._predict(x)
        tile = int(np.sqrt(self.MAX_PIXELS))
        margin = max(tile // 16, 8)
        out = np.empty((h, w), np.uint8)
        for y0 in range(0, h, tile - 2 * margin):
            for x0 in range(0, w, tile - 2 * margin):
                ys, xs = max(y0 - margin, 0), max(x0 - margin, 0)
                ye, xe = min(ys + tile, h), min(xs + tile, w)
                pred = self._predict(x[ys:ye, xs:xe])
                cy, cx = y0 - ys, x0 - xs
                ey = min(y0 + tile - 2 * margin, h)
                ex = min(x0 + tile - 2 * margin, w)
                out[y0:ey, x0:ex] = pred[cy:cy + ey - y0, cx:cx + ex - x0]
        return out

    def predict_stack(self, stack: np.ndarray) -> np.ndarray:
        """The class masks of a (Z, Y, X) stack, slice by slice (the segmenter is 2-D: each
        slice is normalised and predicted on its own, as a 2-D test image would be)."""
        arr = np.asarray(stack)
        if arr.ndim != 3:
            raise ValueError(f"expected a (Z, Y, X) stack; got shape {arr.shape}.")
        return np.stack([self.predict(arr[k]) for k in range(arr.shape[0])])

    def _predict(self, x: np.ndarray) -> np.ndarray:
        torch = _torch()
        from .devices import autocast, resolve_device

        h, w = x.shape
        mult = 2**self.config.levels
        ph, pw = (-h) % mult, (-w) % mult
        mode = "reflect" if ph < h and pw < w else "edge"
        x = np.pad(x, ((0, ph), (0, pw)), mode=mode)
        device = resolve_device(self.config.device)
        self.net.eval()
        with torch.inference_mode(), autocast(device, self.precision):  # type: ignore[arg-type]
            logits = self.net(torch.from_numpy(x)[None, None].to(device))
        return logits[0, :, :h, :w].float().argmax(0).cpu().numpy().astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        """What was trained, for a report: config, precision and why, class weights, time."""
        return {"config": self.config.to_dict(), "precision": self.precision,
                "precision_rule": self.precision_rule,
                "class_weights": [round(float(v), 4) for v in self.weights],
                "seconds": round(self.seconds, 1)}


def train_segmenter(phases: Sequence[Phase], config: SegmenterConfig, *,
                    progress: StepCallback | None = None,
                    weights_from: Sequence[Pool] | None = None,
                    watch: WatchCallback | None = None, watch_every: int = 0) -> Segmenter:
    """Train one segmenter through ``phases`` (e.g. synthetic pre-training, then real).

    Class weights come from the masks of ``weights_from`` (default: every pool of the phases),
    so all arms of an evaluation can share the same weights; a pool's ``ignore`` does not
    change them (a real-only run is the same with or without it). Each phase starts a fresh Adam
    optimiser (fine-tuning after pre-training starts from the weights, not the moments).
    ``watch`` (every ``watch_every`` steps and after the last) sees the network mid-training,
    for a validation curve; it changes nothing in training (same weights with or without it).
    """
    from ._triton_guard import keep_triton_out

    keep_triton_out()  # the optimiser imports torch._dynamo: triton would crash beside a viewer
    torch = _torch()
    from .devices import auto_precision, autocast, check_precision, resolve_device

    device = resolve_device(config.device)
    if config.precision == "auto":
        precision, rule = auto_precision(device, "training", batch_size=config.batch_size)
    else:
        precision = check_precision(config.precision, device)
        rule = f"asked for {precision}"
    pools = [p for ph in phases for p in (ph.primary, ph.secondary) if p is not None]
    if not pools or any(len(p) == 0 for p in pools):
        raise ValueError("a segmenter needs at least one image/mask pair in every pool it uses.")
    check_loss(config.loss)
    weights = (class_weights([m for p in (weights_from or pools) for m in p.masks])
               if config.loss == "weighted_ce" else np.ones(N_CLASSES))
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        net = build_unet(base=config.base, levels=config.levels).to(device)
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(weights, dtype=torch.float32, device=device),
            ignore_index=IGNORE)
        ignoring = any(p.ignores for p in pools)
        rng = np.random.default_rng([config.seed, 9])
        total = sum(ph.steps for ph in phases)
        done = 0
        loss_sum, loss_n = 0.0, 0
        watched = 0.0  # seconds spent in watch(), not counted as training time
        start = time.perf_counter()
        net.train()
        for ph in phases:
            opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(ph.steps, 1),
                                                               eta_min=config.lr * 0.05)
            n_sec = round(ph.mix * config.batch_size) if ph.secondary is not None else 0
            if ph.primary is None:
                n_sec = config.batch_size
            for _ in range(ph.steps):
                parts = []
                if config.batch_size - n_sec > 0:
                    parts.append(_crop_batch(ph.primary, config.batch_size - n_sec,  # type: ignore[arg-type]
                                             config.crop, rng))
                if n_sec > 0:
                    parts.append(_crop_batch(ph.secondary, n_sec, config.crop, rng))  # type: ignore[arg-type]
                xs = torch.from_numpy(np.concatenate([p[0] for p in parts])).to(device)
                ys = torch.from_numpy(np.concatenate([p[1] for p in parts])).to(device)
                with autocast(device, precision):
                    logits = net(xs)
                if ignoring and not bool((ys != IGNORE).any()):
                    loss = logits.float().sum() * 0.0  # nothing to learn here: not NaN
                else:
                    loss = loss_fn(logits.float(), ys)
                    if config.loss == "dice_ce":
                        loss = loss + soft_dice_loss(logits, ys)
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"the segmenter's loss became {float(loss)} at step {done}; try a "
                        f"lower learning rate than {config.lr} or precision fp32.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                if watch is not None:
                    loss_sum, loss_n = loss_sum + float(loss.detach()), loss_n + 1
                    if done == total or (watch_every > 0 and done % watch_every == 0):
                        t0 = time.perf_counter()
                        watch(done, loss_sum / loss_n, Segmenter(
                            net, config, precision, rule, weights, t0 - start - watched))
                        net.train()  # predict() switched to eval mode
                        loss_sum, loss_n = 0.0, 0
                        watched += time.perf_counter() - t0
                if progress is not None:
                    progress(done, total)
        seconds = time.perf_counter() - start - watched
    finally:
        torch.set_num_threads(old_threads)
    return Segmenter(net, config, precision, rule, weights, seconds)


def train_on_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], config: SegmenterConfig,
                   *, progress: StepCallback | None = None) -> Segmenter:
    """Train on real ``(image, mask)`` pairs only (the mask-consistency segmenter)."""
    return train_segmenter([Phase(config.steps, Pool.from_pairs(pairs))], config,
                           progress=progress)
