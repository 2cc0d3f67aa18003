"""Sampling a mask-conditioned diffusion model: any size, one seed per variation, no seams.

The noisy image of the whole (padded) canvas is held at once. At every denoising step the
overlapping tiles are run through the U-Net (in batches) and their model outputs are fused with
the blend window (MultiDiffusion), then one scheduler step moves the whole canvas: the image is
one sample, not a mosaic of samples. Shifted windows (``fusion="shifted"``, SpotDiffusion)
instead cut the canvas into non-overlapping tiles whose grid moves by a seeded offset at every
step, so each pixel is computed once per step and the seams, never twice in the same place,
are denoised away by the following steps. The first step of a MultiDiffusion run may run on
larger tiles (``start_tile``, on by default for distilled few-step models): its input is pure
noise, whose statistics are the same over any area, so a U-Net call on a tile up to 2.5 model
tiles wide predicts what 128-px tiles do (report score and look unchanged, docs/benchmarks.md)
while computing each pixel once instead of about 1.8 times; later steps, whose input already
holds the image, keep the model's tile. The initial noise is a pure function of (seed, slice,
image position), drawn in fixed 64-px blocks, so the same seed gives the same image whatever
the tile batch size, and two seeds differ. Samplers: DPM-Solver++ 2M and DDIM (eta 0), both
deterministic given the noise.

Classifier-free guidance (``guidance`` w, Ho & Salimans 2022): a model trained with tiles
without a mask (``train --unlabeled`` / ``--cond-dropout``) also predicts for the null
condition; the sampler uses null + w * (mask - null), one more U-Net call per tile and step
when w is not 1. ``guidance_where="labelled"`` (the default) applies w only where the mask
draws something (classes 1 and 2) and runs class 0 at 1, the model's own unguided tissue: on
organelle masks, guidance everywhere also sharpens the tissue around the objects into
blotches, while the objects need it to be drawn at all (docs/unlabeled.md). Masks without
class 0 give the same image either way; ``everywhere`` is plain classifier-free guidance.

Cancelling: ``cancel()`` is called between steps (and between tile batches); when it returns
True sampling stops by raising :class:`Cancelled`.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ...devices import Precision, auto_precision, autocast, check_precision, resolve_device
from ...encoding import encode_masks, encoding_lut, unit_to_uint8
from ...masks import validate_mask
from ...tiling import (
    ShiftedGrid,
    StartGrid,
    batches,
    blend_window,
    pad_mask,
    plan_shifted,
    plan_start,
    plan_tiles,
    shift_offsets,
)
from .files import MAX_GUIDANCE, model_guidance, model_sampling
from .networks import SAMPLERS, DiffusionSpec, cast_network, make_scheduler
from .noise import (
    DEFAULT_Z_COUPLING,
    Z_COUPLINGS,
    StackNoise,
    noise_field,
)

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
DEFAULT_PREVIEW_STEPS = 8
#: sampling steps of a model that was not distilled (DPM-Solver++)
DEFAULT_STEPS = 20
#: how the tiles of a canvas larger than one tile are fused at every step: ``multidiffusion``
#: (overlapping tiles, predictions blended) or ``shifted`` (non-overlapping tiles, grid moved)
FUSIONS = ("multidiffusion", "shifted")
#: the guidance a model that learned the null condition samples with unless asked otherwise:
#: at 1 such models follow a mask only loosely (VNC mitochondria drawn as plain tissue, extra
#: membranes inside cells of dense masks); at 3 the mask's objects and membranes are drawn where
#: it says (docs/unlabeled.md). Models without the null condition always run at 1.
DEFAULT_GUIDANCE = 3.0
#: where guidance applies: ``everywhere`` (plain classifier-free guidance) or ``labelled``
#: (classes 1 and 2 of the mask; class 0 runs at guidance 1)
GUIDANCE_WHERE = ("everywhere", "labelled")
#: the synthesizer's default: the same image as ``everywhere`` for masks without class 0
#: (dense masks), and on organelle masks the setting that kept real-looking tissue and met
#: the mitochondria study's targets (docs/utility.md, docs/unlabeled.md)
DEFAULT_GUIDANCE_WHERE = "labelled"
#: a distilled few-step model's first step runs on tiles up to this many model tiles wide
#: (rounded down to the model's divisor: 320 px for 128-px tiles); the first of 2 steps is half
#: the work, and these tiles cost 0.43 of it on a 2-core CPU (docs/benchmarks.md). Models not
#: distilled keep every step on the model's tile (at 20 steps the first is a twentieth of the
#: work, not worth changing their images).
START_TILE_FACTOR = 2.5


def default_start_tile(tile: int, divisor: int) -> int:
    """A distilled model's first-step tile for sampling tiles of ``tile`` px:
    :data:`START_TILE_FACTOR` tiles, rounded down to the divisor."""
    return int(START_TILE_FACTOR * tile) // divisor * divisor


class Cancelled(RuntimeError):
    """Sampling stopped because the caller's ``cancel()`` returned True."""


class DiffusionSamplingError(ValueError):
    """Sampling parameters that cannot work with this model or mask."""


class Denoiser:
    """The U-Net as run for inference: a copy on the device, in the chosen precision.

    On the CPU in bf16 the copy holds bf16 weights (channels_last), as the pix2pix synthesizer
    does; on CUDA reduced precision is autocast over float32 weights. On the CPU each tile runs
    alone: batching gains nothing there (small config, 256 px: fp32 0.45 s per tile at batch 1
    against 0.63 at batch 4; bf16 0.18 against 0.17) and oneDNN picks kernels by batch size,
    whose rounding differs and grows over the steps; alone, a tile gives the same bits whatever
    the batch. On CUDA tiles run batched (results may differ in the last bits by batch size).
    """

    def __init__(self, network: torch.nn.Module, spec: DiffusionSpec, device: torch.device,
                 precision: Precision, *, copy_network: bool = True,
                 guidance: float = 1.0, guidance_where: str = "everywhere") -> None:
        self.spec, self.device, self.precision = spec, device, precision
        #: classifier-free guidance weight: 1 is the plain conditional model
        self.guidance = float(guidance)
        #: ``everywhere``, or ``labelled``: class 0 pixels run at guidance 1
        self.guidance_where = guidance_where
        net = copy.deepcopy(network) if copy_network else network
        net.eval().to(device)
        cpu_bf16 = device.type == "cpu" and precision == "bf16"
        self.dtype = torch.bfloat16 if cpu_bf16 else torch.float32
        if cpu_bf16:
            cast_network(net, torch.bfloat16)
        self.memory_format = (torch.channels_last if cpu_bf16 or device.type == "cuda"
                              else torch.contiguous_format)
        net.to(memory_format=self.memory_format)
        self.network = net
        self.autocast = self.dtype == torch.float32 and precision != "fp32"
        self.lut = encoding_lut(spec.encoding, device)
        self.per_tile = device.type != "cuda"

    def encode(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, H, W) class masks -> (B, C, H, W) float32 conditioning on the device."""
        return encode_masks(masks.to(self.device), self.lut)

    @torch.inference_mode()
    def __call__(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor | int
                 ) -> torch.Tensor:
        """Model output (v or epsilon) for noisy images ``x_t`` (B, 1, H, W), as float32."""
        out = self._run(x_t, cond, t)
        if self.guidance == 1.0:
            return out
        # classifier-free guidance: from the null condition (all 0) towards the mask's
        # prediction and beyond, w * cond + (1 - w) * null
        null = self._run(x_t, torch.zeros_like(cond), t)
        return null + self.guidance_map(cond) * (out - null)

    def guidance_map(self, cond: torch.Tensor) -> torch.Tensor | float:
        """The guidance weight per pixel of encoded masks ``cond`` (B, C, H, W): the weight
        everywhere, or with ``labelled`` (B, 1, H, W), 1 where the mask is class 0."""
        if self.guidance_where == "everywhere":
            return self.guidance
        class0 = self.lut[0].view(1, -1, 1, 1)
        background = (cond == class0).all(1, keepdim=True)
        return torch.where(background, 1.0, self.guidance).to(torch.float32)

    def _run(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor | int
             ) -> torch.Tensor:
        """The network on (x_t, cond): tile by tile on the CPU, batched on CUDA."""
        inp = torch.cat([x_t, cond], 1).to(self.dtype).contiguous(
            memory_format=self.memory_format)
        steps = torch.full((1 if self.per_tile else inp.shape[0],), int(t), device=self.device,
                           dtype=torch.long)
        with autocast(self.device, self.precision if self.autocast else "fp32"):
            if self.per_tile:
                out = torch.cat([self.network(inp[i : i + 1], steps).sample
                                 for i in range(inp.shape[0])])
            else:
                out = self.network(inp, steps).sample
        return out.float()


def denoise_steps(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  noise: torch.Tensor, spec: DiffusionSpec, *, steps: int,
                  sampler: str = "dpm") -> Generator[int, None, torch.Tensor]:
    """Run the sampler from ``noise``, yielding the number of steps done after every step;
    ``predict(x_t, t)`` gives the model output for x_t.

    Returns (``StopIteration.value``) the denoised sample (same shape as ``noise``, float32,
    roughly in [-1, 1]). Closing the generator stops between two steps.
    """
    if steps < 1:
        raise DiffusionSamplingError(f"steps must be at least 1; got {steps}.")
    scheduler = make_scheduler(spec, sampler)
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        out = predict(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x).prev_sample
        yield i + 1
    return x


def drive(gen: Generator[Any, None, Any], total: int, *,
          progress: Callable[[Any], None] | None = None, cancel: CancelFn | None = None
          ) -> Any:
    """Run a step generator to its end: ``cancel()`` before each of its ``total`` steps raises
    :class:`Cancelled`, ``progress(item)`` after each; returns the generator's value."""
    done = 0
    while True:
        if cancel is not None and done < total and cancel():
            gen.close()
            raise Cancelled(f"sampling cancelled before step {done + 1} of {total}.")
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        done += 1
        if progress is not None:
            progress(item)


def denoise(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
            spec: DiffusionSpec, *, steps: int, sampler: str = "dpm",
            progress: Callable[[int], None] | None = None,
            cancel: CancelFn | None = None) -> torch.Tensor:
    """:func:`denoise_steps` run to its end, with ``progress(steps_done)`` after each step;
    raises :class:`Cancelled` when ``cancel()`` is true between two steps."""
    return drive(denoise_steps(predict, noise, spec, steps=steps, sampler=sampler), steps,
                 progress=progress, cancel=cancel)


def sample_batch(denoiser: Denoiser, masks: torch.Tensor, *, seed: int, steps: int,
                 sampler: str = "dpm") -> torch.Tensor:
    """Whole-tile samples for a batch of masks (B, H, W), as (B, H, W) in [-1, 1].

    Sample ``b`` starts from ``noise_field(seed, b, ...)``: previews are deterministic.
    """
    cond = denoiser.encode(masks)
    b, h, w = masks.shape
    noise = torch.stack([noise_field(seed, i, 0, 0, h, w) for i in range(b)])[:, None]
    x = denoise(lambda x_t, t: denoiser(x_t, cond, t), noise.to(denoiser.device),
                denoiser.spec, steps=steps, sampler=sampler)
    return x[:, 0].clamp(-1, 1).cpu()


# --------------------------------------------------------------------------- canvas


@dataclass
class _Kept:
    """What live preview keeps of one slice: the padded mask and the denoised canvas."""

    grid: Any
    seed: int
    padded: np.ndarray
    canvas: np.ndarray  # float32 (padded_height, padded_width), the final sample
    image: np.ndarray  # uint8 (height, width)


def _overlaps(a: tuple[int, int], b: tuple[int, int], t: int) -> bool:
    return abs(a[0] - b[0]) < t and abs(a[1] - b[1]) < t


def learned_null(model: Any) -> bool:
    """Whether ``model`` was trained with tiles without a mask (``--unlabeled`` or
    ``--cond-dropout``), so that it knows the null condition guidance needs."""
    info = getattr(model, "info", None)
    return bool(info is not None and info.metadata.get("null_condition"))


def default_guidance(metadata: Mapping[str, Any]) -> tuple[float, str]:
    """The guidance a model samples with unless asked, and why: the weight its file records
    (``default_guidance``), else :data:`DEFAULT_GUIDANCE` for a model that learned the null
    condition; 1 for a model that did not (it cannot be guided)."""
    if not metadata.get("null_condition"):
        return 1.0, "never learned the null condition"
    recorded = model_guidance(metadata)
    if recorded is not None:
        return recorded, "recorded in the file"
    return DEFAULT_GUIDANCE, "learned the null condition"


def check_guidance(guidance: float, model: Any) -> float:
    """``guidance`` as a float, or a :class:`DiffusionSamplingError` saying why it cannot
    run: negative, or other than 1 for a model that never learned the null condition."""
    try:
        value = float(guidance)
    except (TypeError, ValueError):
        raise DiffusionSamplingError(f"guidance is a number (1: no guidance); got "
                                     f"{guidance!r}.") from None
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise DiffusionSamplingError(f"guidance must be between 0 and {MAX_GUIDANCE:g} "
                                     f"(1: no guidance); got {value:g}.")
    if value != 1.0 and not learned_null(model):
        raise DiffusionSamplingError(
            f"guidance {value:g} needs a model that learned the null condition (trained with "
            "--unlabeled DIR or --cond-dropout); this one did not. Use guidance 1 or such a "
            "model.")
    return value


def _diffusion_model(model: Any) -> Any:
    """``model`` if it is a loaded diffusion model (a LoadedModel of the diffusion family),
    else the diffusion model file it names (a path or a bundled name); a model of another
    family is refused."""
    from .files import load_diffusion

    if not hasattr(model, "network") or not hasattr(model, "spec"):
        model = load_diffusion(model)
    if not isinstance(model.spec, DiffusionSpec):
        family = model.info.family
        raise DiffusionSamplingError(
            f"{model.info.path} holds a {family} model, not a diffusion model; create the "
            "synthesizer with napari_synthgen.registry.make_synthesizer(model) instead.")
    return model


class DiffusionSynthesizer:
    """Synthesize uint8 EM images from class masks with a diffusion model (any size).

    ``model`` is a loaded diffusion model (``load_model``'s LoadedModel) or a path.
    ``tile`` defaults to the model's; ``overlap`` to a quarter tile; ``steps`` and ``sampler``
    (``dpm`` = DPM-Solver++ 2M, ``ddim``) set the full run (unset: the model's own,
    :meth:`model_defaults`: a distilled model's few DDIM steps, else DPM-Solver++ 20; a value
    other than a distilled model's own adds a line to ``notes``), ``preview_steps`` live preview.
    ``fusion`` fuses the tiles of a canvas larger than one tile at every step: ``multidiffusion``
    (overlapping tiles blended, the default) or ``shifted`` (non-overlapping tiles on a grid
    moved by a seeded offset at every step: 1.7x less U-Net work; see docs/design.md).
    ``encoding`` must be the model's own (a diffusion model is trained on one); ``stochastic``
    is accepted for the common interface and always true (every seed is a variation). Call it
    with a 2-D mask or a 3-D (Z, Y, X) stack; ``z_coupling`` says how a stack's slices are
    tied: ``serial`` (default) draws their initial noise correlated along z like serial
    sections' texture (:mod:`.noise`; slice 0 is the 2-D sample of the seed), ``independent``
    gives slice ``z`` the noise of seed ``(seed, z)``. :meth:`run` yields progress after every
    denoising step (stop iterating to cancel). ``guidance`` (unset: the model's own) and
    ``guidance_where`` (``labelled``, the default, or ``everywhere``) apply to a model that
    learned the null condition. ``start_tile`` (px, a multiple of the model's divisor, at least
    the tile; 0: off; unset: the model's own, :meth:`model_defaults`) runs MultiDiffusion's
    first step on tiles up to that size (see the module's docstring).
    """

    family = "diffusion"
    stochastic = True  # every seed is a different variation
    #: values a setting may take (the Synthesize widget makes drop-downs of them)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "sampler": SAMPLERS, "fusion": FUSIONS, "z_coupling": tuple(Z_COUPLINGS),
        "guidance_where": GUIDANCE_WHERE}

    def __init__(self, model: Any, *, device: str | torch.device = "auto",
                 precision: str = "auto", tile: int | None = None, overlap: int | None = None,
                 batch_size: int | None = None, encoding: str | None = None,
                 stochastic: bool = True, steps: int | None = None, sampler: str | None = None,
                 preview_steps: int = DEFAULT_PREVIEW_STEPS,
                 fusion: str = "multidiffusion", z_coupling: str = DEFAULT_Z_COUPLING,
                 guidance: float | None = None,
                 guidance_where: str = DEFAULT_GUIDANCE_WHERE,
                 start_tile: int | None = None) -> None:
        model = _diffusion_model(model)
        self.model, self.spec, self.info = model, model.spec, model.info
        #: what the user should know about these settings (generate shows them as notes)
        self.notes: list[str] = []
        own = self.model_defaults(model)
        made_for = model_sampling(self.info.metadata)
        if made_for is not None:
            asked = [f"{k} {v}" for k, v in (("steps", steps), ("sampler", sampler))
                     if v is not None and v != own[k]]
            if asked:
                self.notes.append(
                    f"this model was distilled for {made_for[0]} {made_for[1]} steps; running "
                    f"{', '.join(asked)} as asked (leave them unset to use the model's own, "
                    "which it was trained for; other values give blurrier or noisier images).")
        steps = own["steps"] if steps is None else steps
        sampler = own["sampler"] if sampler is None else sampler
        if encoding is not None and encoding != self.spec.encoding:
            raise DiffusionSamplingError(
                f"this diffusion model was trained on {self.spec.encoding!r} masks; its "
                f"encoding cannot be changed to {encoding!r} (leave the encoding unset).")
        self.encoding = self.spec.encoding
        self.device = resolve_device(device)
        div = self.spec.divisor
        self.tile = int(tile or self.spec.tile)
        if self.tile < div or self.tile % div:
            raise DiffusionSamplingError(
                f"tile {self.tile} does not fit this model, which needs tiles that are a "
                f"multiple of {div} pixels.")
        self.overlap = self.tile // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap <= self.tile // 2:
            raise DiffusionSamplingError(
                f"overlap {self.overlap} must be between 0 and half the tile ({self.tile // 2}).")
        if batch_size is None:
            batch_size = 8 if self.device.type == "cuda" else 4
        if batch_size < 1:
            raise DiffusionSamplingError(f"batch size must be at least 1; got {batch_size}.")
        if sampler not in SAMPLERS:
            raise DiffusionSamplingError(f"unknown sampler {sampler!r}; use "
                                         f"{' or '.join(SAMPLERS)}.")
        if fusion not in FUSIONS:
            raise DiffusionSamplingError(f"unknown fusion {fusion!r}; use "
                                         f"{' or '.join(FUSIONS)}.")
        self.fusion = fusion
        if z_coupling not in Z_COUPLINGS:
            raise DiffusionSamplingError(f"unknown z coupling {z_coupling!r}; use "
                                         f"{' or '.join(Z_COUPLINGS)}.")
        self.z_coupling = z_coupling
        self._noise = StackNoise(Z_COUPLINGS[z_coupling])
        for name, value in (("steps", steps), ("preview_steps", preview_steps)):
            if int(value) < 1:
                raise DiffusionSamplingError(f"{name} must be at least 1; got {value}.")
        self.batch_size, self.steps, self.sampler = int(batch_size), int(steps), sampler
        self.preview_steps = int(preview_steps)
        self.requested_precision = str(precision).lower()
        self.precision_note = ""
        if self.requested_precision == "auto":
            self.precision, self.precision_note = auto_precision(self.device, "inference")
        else:
            self.precision = check_precision(self.requested_precision, self.device)
        self.guidance = check_guidance(own["guidance"] if guidance is None else guidance, model)
        if guidance_where not in GUIDANCE_WHERE:
            raise DiffusionSamplingError(f"unknown guidance_where {guidance_where!r}; use "
                                         f"{' or '.join(GUIDANCE_WHERE)}.")
        self.guidance_where = guidance_where
        if start_tile is None:  # the model's own, for the tile this synthesizer runs
            start_tile = own["start_tile"] and default_start_tile(self.tile, div)
        self.start_tile = self._check_start_tile(start_tile)
        if guidance_where == "everywhere" and self.guidance == 1.0:  # asked for, not default
            self.notes.append(f"guidance_where {guidance_where} changes nothing at guidance 1 "
                              "(no guidance anywhere); set a guidance above 1 to guide "
                              "the whole image.")
        self.denoiser = Denoiser(model.network, self.spec, self.device, self.precision,
                                 guidance=self.guidance, guidance_where=guidance_where)
        self._windows: dict[tuple[int, int], torch.Tensor] = {}
        self._kept: dict[int, _Kept] = {}

    def _check_start_tile(self, value: Any) -> int:
        """``start_tile`` as an int, 0 (off) or a multiple of the divisor of at least the tile;
        else a :class:`DiffusionSamplingError` saying what fits."""
        div = self.spec.divisor
        try:
            tile = int(value)
        except (TypeError, ValueError):
            tile = -1
        if tile != value or tile < 0 or (tile and (tile < self.tile or tile % div)):
            raise DiffusionSamplingError(
                f"start tile {value!r} does not fit: use 0 (the first step on the model's "
                f"tiles) or a multiple of {div} px of at least the tile ({self.tile}).")
        return tile

    @staticmethod
    def model_defaults(model: Any) -> dict[str, Any]:
        """The steps, sampler, guidance and start tile ``model`` runs with unless asked
        otherwise: a distilled model's own steps and sampler (it was trained for them), else
        DPM-Solver++ with 20 steps; for a model that learned the null condition, the guidance
        its file records (``default_guidance``, e.g. 1 for the bundled demo, whose dense ISBI
        masks saturate at 3) or :data:`DEFAULT_GUIDANCE`; else 1 (none); for a distilled model
        a first step on tiles :data:`START_TILE_FACTOR` model tiles wide, else 0 (off)."""
        info = getattr(model, "info", None)
        made_for = model_sampling(info.metadata) if info is not None else None
        steps, sampler = made_for or (DEFAULT_STEPS, "dpm")
        guidance = default_guidance(info.metadata)[0] if info is not None else 1.0
        start = 0
        spec = getattr(model, "spec", None)
        if made_for is not None and isinstance(spec, DiffusionSpec):
            start = default_start_tile(spec.tile, spec.divisor)
        return {"steps": steps, "sampler": sampler, "guidance": guidance, "start_tile": start}

    @staticmethod
    def hidden_options(model: Any) -> tuple[str, ...]:
        """Settings that do not apply to ``model``: guidance (and where it applies), unless it
        learned the null condition."""
        return () if learned_null(model) else ("guidance", "guidance_where")

    # ----------------------------------------------------------------- planning
    def plan(self, height: int, width: int) -> Any:
        """The tile grid of one slice; a slice smaller than the tile runs as one smaller tile."""
        div = self.spec.divisor
        side = max(height, width)
        tile = min(self.tile, max(div, -(-side // div) * div))
        return plan_tiles(height, width, tile, self.overlap if tile == self.tile else 0)

    def plan_shifted(self, height: int, width: int) -> ShiftedGrid:
        """The shifted-window grid of one slice: tiles of at most ``tile``, the canvas padded
        by at least an eighth of a tile (and half the overlap, so it holds the
        MultiDiffusion canvas that live preview works on)."""
        margin = max(self.tile // 8, self.overlap // 2)
        return plan_shifted(height, width, self.tile, self.spec.divisor, margin)

    def _window(self, grid: Any) -> torch.Tensor:
        key = (grid.tile, grid.overlap)
        if key not in self._windows:
            self._windows[key] = torch.from_numpy(blend_window(grid.tile, grid.overlap)).to(
                self.device)
        return self._windows[key]

    # ----------------------------------------------------------------- MultiDiffusion
    def _multidiffusion(self, padded: np.ndarray, grid: Any, tiles: list[tuple[int, int]],
                        box: tuple[int, int, int, int], seed: int, z: int, steps: int,
                        cancel: CancelFn | None) -> Generator[int, None, torch.Tensor]:
        """Denoise the canvas ``box`` = (y0, y1, x0, x1) (padded coordinates) covered by
        ``tiles``, fusing the tiles' model outputs at every step; yields after every step and
        returns the box's sample. ``cancel()`` is also asked between tile batches."""
        y0, y1, x0, x1 = box
        t, win = grid.tile, self._window(grid)
        cond = self.denoiser.encode(torch.from_numpy(
            np.ascontiguousarray(padded[y0:y1, x0:x1]))[None])[0]
        noise = self._noise.field(seed, z, y0 - grid.top, x0 - grid.left, y1 - y0, x1 - x0)
        local = [(y - y0, x - x0) for y, x in tiles]
        den = torch.zeros(y1 - y0, x1 - x0, device=self.device)
        for y, x in local:
            den[y : y + t, x : x + t] += win
        inv_den = torch.where(den > 0, 1.0 / den.clamp_min(1e-12), torch.zeros_like(den))

        def predict(x_t: torch.Tensor, step_t: torch.Tensor) -> torch.Tensor:
            return self._weighted_tiles(x_t, cond, local, (t, t), win, step_t, cancel) * inv_den

        def predict_first_large(x_t: torch.Tensor, step_t: torch.Tensor) -> torch.Tensor:
            nonlocal first
            if first:
                first = False
                return self._start_step(x_t, cond, step_t, cancel)
            return predict(x_t, step_t)

        first = bool(self.start_tile) and len(local) > 1
        x = yield from denoise_steps(predict_first_large, noise[None, None].to(self.device),
                                     self.spec, steps=steps, sampler=self.sampler)
        return x[0, 0]

    def _weighted_tiles(self, x_t: torch.Tensor, cond: torch.Tensor,
                        tiles: list[tuple[int, int]], size: tuple[int, int],
                        win: torch.Tensor, step_t: torch.Tensor, cancel: CancelFn | None
                        ) -> torch.Tensor:
        """The sum over ``tiles`` (origins of ``size`` = (h, w) tiles of ``x_t`` (1, 1, H, W)
        and ``cond`` (C, H, W)) of each tile's model output times the window ``win``, run in
        batches; the caller divides by the summed window. ``cancel()`` is asked per batch."""
        th, tw = size
        num = torch.zeros_like(x_t)
        for batch in batches(tiles, self.batch_size):
            if cancel is not None and cancel():
                raise Cancelled("sampling cancelled during a denoising step.")
            xs = torch.stack([x_t[0, :, y : y + th, x : x + tw] for y, x in batch])
            cs = torch.stack([cond[:, y : y + th, x : x + tw] for y, x in batch])
            outs = self.denoiser(xs, cs, step_t)
            for (y, x), o in zip(batch, outs, strict=True):
                num[0, :, y : y + th, x : x + tw] += win * o
        return num

    def plan_start(self, height: int, width: int) -> StartGrid:
        """The first step's large tiles over a canvas of ``height`` x ``width``."""
        return plan_start(height, width, self.start_tile, self.overlap, self.spec.divisor)

    def _start_step(self, x_t: torch.Tensor, cond: torch.Tensor, step_t: torch.Tensor,
                    cancel: CancelFn | None) -> torch.Tensor:
        """The model output for the whole canvas ``x_t`` (1, 1, H, W), conditioned on
        ``cond`` (C, H, W), from the start grid's large tiles (:meth:`plan_start`), blended
        like MultiDiffusion's; a canvas shorter than one tile along an axis is
        reflection-padded up to it and cropped back."""
        h, w = x_t.shape[-2:]
        grid = self.plan_start(h, w)
        ph, pw = grid.padded_height, grid.padded_width
        if (ph, pw) != (h, w):
            pad = (0, pw - w, 0, ph - h)
            x_t = torch.nn.functional.pad(x_t, pad, mode="reflect")
            cond = torch.nn.functional.pad(cond[None], pad, mode="reflect")[0]
        size = (grid.tile_h, grid.tile_w)
        win = torch.from_numpy(blend_window(grid.tile_h, grid.overlap, grid.tile_w)).to(
            self.device)
        den = torch.zeros(ph, pw, device=self.device)
        for y, x in grid.tiles:
            den[y : y + size[0], x : x + size[1]] += win
        num = self._weighted_tiles(x_t, cond, grid.tiles, size, win, step_t, cancel)
        return (num / den)[..., :h, :w]

    # ----------------------------------------------------------------- shifted windows
    def _shifted(self, padded: np.ndarray, grid: ShiftedGrid, seed: int, z: int, steps: int,
                 cancel: CancelFn | None) -> Generator[int, None, torch.Tensor]:
        """Denoise the whole padded canvas with shifted non-overlapping windows: at step k the
        canvas is rolled by ``shift_offsets(seed, z, k)``, cut into the grid's tiles, each
        tile's model output written in place and the result rolled back. Yields after every
        step and returns the canvas's sample; ``cancel()`` is also asked between tile batches.
        """
        th, tw = grid.tile_h, grid.tile_w
        cond = self.denoiser.encode(torch.from_numpy(np.ascontiguousarray(padded))[None])[0]
        noise = self._noise.field(seed, z, -grid.top, -grid.left, grid.padded_height,
                                  grid.padded_width)
        tiles = grid.tiles
        done = 0  # the sampler asks the model once per step, in order

        def predict(x_t: torch.Tensor, step_t: torch.Tensor) -> torch.Tensor:
            nonlocal done
            dy, dx = shift_offsets(seed, z, done, grid)
            done += 1
            xr = torch.roll(x_t[0], (-dy, -dx), (1, 2))
            cr = torch.roll(cond, (-dy, -dx), (1, 2))
            out = torch.empty_like(xr)
            for batch in batches(tiles, self.batch_size):
                if cancel is not None and cancel():
                    raise Cancelled("sampling cancelled during a denoising step.")
                xs = torch.stack([xr[:, y : y + th, x : x + tw] for y, x in batch])
                cs = torch.stack([cr[:, y : y + th, x : x + tw] for y, x in batch])
                outs = self.denoiser(xs, cs, step_t)
                for (y, x), o in zip(batch, outs, strict=True):
                    out[:, y : y + th, x : x + tw] = o
            return torch.roll(out, (dy, dx), (1, 2))[None]

        x = yield from denoise_steps(predict, noise[None, None].to(self.device), self.spec,
                                     steps=steps, sampler=self.sampler)
        return x[0, 0]

    # ----------------------------------------------------------------- full runs
    def run(self, mask: np.ndarray, *, seed: int = 0, keep: bool = False,
            steps: int | None = None) -> Generator[tuple[int, int], None, np.ndarray]:
        """Synthesize ``mask``, yielding ``(steps_done, steps_total)`` after every denoising
        step (total = steps x slices); returns the uint8 image (``StopIteration.value``).

        Closing the generator (stop iterating) cancels between two steps. ``keep`` keeps the
        result for :meth:`update` (live preview).
        """
        return (yield from self._run(mask, seed, keep, steps, None))

    def __call__(self, mask: np.ndarray, *, seed: int = 0, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, keep: bool = False,
                 steps: int | None = None) -> np.ndarray:
        """A uint8 image of the mask's shape (2-D, or a 3-D stack slice by slice).

        ``progress(done, total)`` is called after every denoising step (total = steps x
        slices); ``cancel()`` between steps (and tile batches) raises :class:`Cancelled`.
        ``keep`` keeps the result for :meth:`update` (live preview).
        """
        m = validate_mask(mask)
        total = int(steps or self.steps) * (1 if m.ndim == 2 else m.shape[0])
        return drive(self._run(m, seed, keep, steps, cancel), total, cancel=cancel,
                     progress=(lambda item: progress(*item)) if progress else None)

    def _run(self, mask: np.ndarray, seed: int, keep: bool, steps: int | None,
             cancel: CancelFn | None) -> Generator[tuple[int, int], None, np.ndarray]:
        m = validate_mask(mask)
        slices = [m] if m.ndim == 2 else list(m)
        n_steps = int(steps or self.steps)
        if n_steps < 1:
            raise DiffusionSamplingError(f"steps must be at least 1; got {n_steps}.")
        total = n_steps * len(slices)
        out = np.empty(m.shape, dtype=np.uint8)
        if keep:
            self._kept.clear()
        for z, s in enumerate(slices):
            target = out if m.ndim == 2 else out[z]
            gen = self._sample_slice(s, seed, z, n_steps, cancel)
            while True:
                try:
                    i = next(gen)
                except StopIteration as stop:
                    kept = stop.value
                    break
                yield z * n_steps + i, total
            target[...] = kept.image
            if keep:
                self._kept[z] = kept
        return out

    def _sample_slice(self, mask2d: np.ndarray, seed: int, z: int, steps: int,
                      cancel: CancelFn | None) -> Generator[int, None, _Kept]:
        grid = self.plan(*mask2d.shape)
        padded = pad_mask(mask2d, grid)
        if self.fusion == "shifted" and len(grid.tiles) > 1:
            shifted = self.plan_shifted(*mask2d.shape)
            whole = yield from self._shifted(pad_mask(mask2d, shifted), shifted, seed, z,
                                             steps, cancel)
            # kept in the MultiDiffusion grid's coordinates, where live preview works
            y0, x0 = shifted.top - grid.top, shifted.left - grid.left
            canvas = whole[y0 : y0 + grid.padded_height, x0 : x0 + grid.padded_width]
        else:  # one tile: nothing to fuse, both fusions are the same
            box = (0, grid.padded_height, 0, grid.padded_width)
            canvas = yield from self._multidiffusion(padded, grid, grid.tiles, box, seed, z,
                                                     steps, cancel)
        canvas = canvas.cpu().numpy()
        return _Kept(grid, seed, padded, canvas, self._image(canvas, grid))

    @staticmethod
    def _image(canvas: np.ndarray, grid: Any) -> np.ndarray:
        return unit_to_uint8(canvas[grid.top : grid.top + grid.height,
                                    grid.left : grid.left + grid.width])

    # ----------------------------------------------------------------- live preview
    def adopt_kept(self, source: Any) -> int:
        """Take the results ``source`` (another diffusion synthesizer, e.g. the full model's
        Synthesize run) keeps for live preview, so that the next stroke redraws only the tiles
        it touched on top of them instead of the whole slice.

        Only slices whose tile grid is this synthesizer's are taken (same tile and overlap).
        The records are copied (synthesizers replace their arrays, never write into them).
        Returns how many slices were taken.
        """
        kept = getattr(source, "_kept", None)
        if source is self or not isinstance(kept, dict):
            return 0
        n = 0
        for z, record in list(kept.items()):
            if self.plan(record.grid.height, record.grid.width) == record.grid:
                self._kept[z] = copy.copy(record)
                n += 1
        return n

    def update(self, mask: np.ndarray, *, seed: int | None = None, z: int = 0,
               progress: ProgressFn | None = None, cancel: CancelFn | None = None
               ) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
        """Live preview: sample again only where the mask changed since the last kept result.

        Without a kept result for this shape and seed it samples the whole slice with
        ``preview_steps`` (and the synthesizer's fusion) and keeps it. Strokes are always
        resampled with MultiDiffusion over the touched region, whatever the fusion: a few
        overlapping tiles merge smoothly into the kept image. Returns the image of slice ``z``
        and the image regions recomputed (pixels outside them are unchanged). See
        :meth:`resample_region`.
        """
        m = validate_mask(mask)
        m2 = m if m.ndim == 2 else m[z]
        kept = self._kept.get(z)
        if (kept is None or (kept.grid.height, kept.grid.width) != m2.shape
                or (seed is not None and seed != kept.seed)):
            steps = self.preview_steps
            kept = drive(self._sample_slice(
                m2, kept.seed if seed is None and kept else (seed or 0), z, steps, cancel),
                steps, progress=(lambda i: progress(i, steps)) if progress else None,
                cancel=cancel)
            self._kept[z] = kept
            return kept.image.copy(), [(slice(0, m2.shape[0]), slice(0, m2.shape[1]))]
        return self.resample_region(m2, z=z, progress=progress, cancel=cancel)

    def resample_region(self, mask2d: np.ndarray, *, z: int = 0, steps: int | None = None,
                        progress: ProgressFn | None = None, cancel: CancelFn | None = None
                        ) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
        """Sample again the tiles a stroke touched, fused with the tiles overlapping them.

        Touched tiles T are those whose padded mask changed. Fusion couples a tile to every
        tile it overlaps, so the set R = T plus the tiles overlapping T is denoised together
        (MultiDiffusion on R's bounding box, same noise as the full run). The new result
        replaces the old one with weight (blend weight of T) / (blend weight of all tiles):
        1 where only touched tiles cover a pixel (the stroke and its surroundings), falling
        smoothly to 0 at the edge of T's footprint, so no seam shows.

        Trade-off: R's own neighbours are not denoised again, so R is sampled without its
        outer context and the preview is close to, not byte-identical with, a full run of the
        new mask; with deterministic samplers fewer steps (``preview_steps``, default 8)
        approximate the same sample as the full run. A final Synthesize run is exact.
        """
        kept = self._kept.get(z)
        if kept is None:
            raise DiffusionSamplingError("no kept result to update; call with keep=True or "
                                         "use update() first.")
        grid, t = kept.grid, kept.grid.tile
        new_padded = pad_mask(mask2d, grid)
        touched = [(y, x) for y, x in grid.tiles
                   if not np.array_equal(new_padded[y : y + t, x : x + t],
                                         kept.padded[y : y + t, x : x + t])]
        if not touched:
            kept.padded = new_padded
            return kept.image.copy(), []
        region = [o for o in grid.tiles if any(_overlaps(o, d, t) for d in touched)]
        box = (min(y for y, _ in region), max(y for y, _ in region) + t,
               min(x for _, x in region), max(x for _, x in region) + t)
        n = int(steps or self.preview_steps)
        sample = drive(self._multidiffusion(new_padded, grid, region, box, kept.seed, z, n,
                                            cancel),
                       n, progress=(lambda i: progress(i, n)) if progress else None,
                       cancel=cancel).cpu().numpy()
        win = blend_window(grid.tile, grid.overlap)
        w_touched = np.zeros_like(kept.canvas)
        w_all = np.zeros_like(kept.canvas)
        for y, x in grid.tiles:
            w_all[y : y + t, x : x + t] += win
            if (y, x) in touched:
                w_touched[y : y + t, x : x + t] += win
        y0, y1, x0, x1 = box
        w = (w_touched / w_all)[y0:y1, x0:x1]
        canvas = kept.canvas.copy()
        canvas[y0:y1, x0:x1] = w * sample + (1.0 - w) * canvas[y0:y1, x0:x1]
        kept.canvas, kept.padded = canvas, new_padded
        kept.image = self._image(canvas, grid)
        regions = [sl for sl in (grid.image_slices(y, x) for y, x in touched) if sl is not None]
        return kept.image.copy(), regions

    def kept(self, z: int = 0) -> bool:
        """True when a result of slice ``z`` is kept for :meth:`update`."""
        return z in self._kept

    # ----------------------------------------------------------------- lifetime
    def describe(self) -> dict[str, Any]:
        """What this synthesizer runs: model, device, precision, tiling, and (also under
        ``family_settings``) steps, sampler, live-preview steps and fusion."""
        from ...synthesis import describe_common

        return {
            "family": "diffusion",
            **describe_common(self),
            "steps": self.steps,
            "sampler": self.sampler,
            "preview_steps": self.preview_steps,
            "fusion": self.fusion,
            "guidance": self.guidance,
            "guidance_where": self.guidance_where,
            "start_tile": self.start_tile,
            "z_coupling": Z_COUPLINGS[self.z_coupling].record(),
            "prediction_type": self.spec.prediction_type,
            # what generate records with every image and GenerateJob.options passes back
            "family_settings": {"steps": self.steps, "sampler": self.sampler,
                                "preview_steps": self.preview_steps, "fusion": self.fusion,
                                "z_coupling": self.z_coupling, "guidance": self.guidance,
                                "guidance_where": self.guidance_where,
                                "start_tile": self.start_tile},
        }

    def close(self) -> None:
        """Free the network copy and kept results (and GPU memory)."""
        self._kept.clear()
        self.denoiser = None  # type: ignore[assignment]
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
