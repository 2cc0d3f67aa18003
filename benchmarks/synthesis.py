"""Synthesis speed, accuracy and memory on this machine, against a plain baseline.

Prints a table for ``unet_256`` with ``ngf`` 64 (the size of the reference pix2pix runs):

- our default CPU path (``Synthesizer`` with its defaults: tiles, blending, ``precision="auto"``)
  against a plain fp32 eager forward of the same network on the whole image, at 256 and 512;
- the error of the fast path against fp32 synthesis of the same mask;
- the peak memory (RSS) of synthesizing an 8192 x 8192 mask, in a fresh process;
- the time of a live-preview update after a brush stroke on a 2048 x 2048 mask against one tile
  and against a full synthesis.

The network has reference initialisation (N(0, 0.02)) with batch-norm statistics warmed on
masks, and its last layer scaled so that its images have the contrast of EM (grey-level standard
deviation about 40): an untrained network gives near-constant images, on which no error can be
measured. The error is the RMS difference from fp32 over the fp32 image's standard deviation;
it is also given for the bundled demo model (trained) when the package has one.
Run: ``python benchmarks/synthesis.py`` (``--quick`` skips the 8192 x 8192 run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from napari_synthgen.devices import cpu_bf16_flags
from napari_synthgen.encoding import encode_mask
from napari_synthgen.families.pix2pix.files import save_model
from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator
from napari_synthgen.families.pix2pix.synthesizer import prepare_network
from napari_synthgen.layouts import make_layout
from napari_synthgen.registry import load_model, make_synthesizer
from napari_synthgen.sample_data import demo_model_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def reference_sized_model(path: Path) -> Path:
    """unet_256, ngf 64, saved like a reference checkpoint would be (no tile in the file)."""
    torch.manual_seed(0)
    spec = GeneratorSpec(netG="unet_256", input_nc=3, output_nc=1, ngf=64, norm="batch")
    net = build_generator(spec)
    masks = [make_layout("dense", (256, 256), seed=s) for s in range(8)]
    x = torch.from_numpy(np.stack([encode_mask(m, "rgb") for m in masks]))
    net.train()
    with torch.no_grad():
        for i in range(0, 8, 2):  # warm batch-norm statistics, as a trained model has them
            net(x[i : i + 2])
        net.eval()
        last = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
        std = torch.atanh(net(x[:2]).clamp(-0.999, 0.999)).std()
        scale = 0.35 / float(std)  # EM-like contrast: std ~0.35 in [-1, 1], ~45 grey levels
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return save_model(path, net, spec, encoding="rgb")


def relative_error(fast: np.ndarray, ref: np.ndarray) -> float:
    """RMS difference over the reference image's standard deviation."""
    fast, ref = fast.astype(np.float64), ref.astype(np.float64)
    return float(np.sqrt(np.mean((fast - ref) ** 2)) / ref.std())


def best_time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def speed_and_error(model_path: Path) -> list[tuple[str, str]]:
    rows = []
    model = load_model(model_path)
    net = model.network.eval()
    ours = make_synthesizer(model, device="cpu")  # the default path
    exact = make_synthesizer(load_model(model_path), device="cpu", precision="fp32")
    rows.append(("CPU bf16 flags", " ".join(sorted(cpu_bf16_flags() or [])) or "none"))
    rows.append(("default precision", f"{ours.precision} ({ours.precision_note})"))
    rows += forward_by_precision(model)
    for size in (256, 512):
        mask = make_layout("dense", (size, size), seed=11)
        x = torch.from_numpy(encode_mask(mask, "rgb"))[None]

        def plain(x=x) -> None:
            with torch.inference_mode():
                net(x)

        t_plain = best_time(plain)
        t_ours = best_time(lambda m=mask: ours(m))
        rows.append((f"{size}x{size}: plain fp32 forward", f"{t_plain * 1000:.0f} ms"))
        rows.append((f"{size}x{size}: our default path", f"{t_ours * 1000:.0f} ms"))
        rows.append((f"{size}x{size}: ours / plain", f"{t_ours / t_plain:.2f}"))
        fast, ref = ours(mask), exact(mask)
        rows.append((f"{size}x{size}: relative error vs fp32",
                     f"{relative_error(fast, ref):.2e} (image std {ref.std():.0f}, mean |diff| "
                     f"{np.abs(fast.astype(float) - ref).mean():.2f} grey levels)"))
    demo = demo_model_path()
    if demo is not None:
        mask = make_layout("dense", (512, 512), seed=11)
        fast = make_synthesizer(demo, device="cpu")(mask)
        ref = make_synthesizer(demo, device="cpu", precision="fp32")(mask)
        rows.append(("512x512: relative error, demo model",
                     f"{relative_error(fast, ref):.2e} (image std {ref.std():.0f})"))
    return rows


def forward_by_precision(model) -> list[tuple[str, str]]:
    """The network alone at 512 x 512 in fp32 and in bf16 (bf16 weights, channels_last), the
    copies prepared before timing: the measurement behind the CPU inference rule."""
    cpu = torch.device("cpu")
    x = torch.from_numpy(encode_mask(make_layout("dense", (512, 512), seed=5), "rgb"))[None]
    t = {}
    for p in ("fp32", "bf16"):
        net, _ = prepare_network(model.network, cpu, p)
        xp = x.to(torch.bfloat16 if p == "bf16" else torch.float32).contiguous(
            memory_format=torch.channels_last if p == "bf16" else torch.contiguous_format)

        def fwd(net=net, xp=xp) -> None:
            with torch.inference_mode():
                net(xp)

        try:
            t[p] = best_time(fwd)
        except RuntimeError as exc:  # no bf16 kernels on this CPU/build
            return [("512x512: bf16 forward", f"does not run here ({exc})")]
    return [("512x512: forward fp32 / bf16 (prepared)",
             f"{t['fp32'] * 1000:.0f} / {t['bf16'] * 1000:.0f} ms"),
            ("512x512: bf16 forward / fp32 forward", f"{t['bf16'] / t['fp32']:.2f}")]


def stroke_update(model_path: Path) -> list[tuple[str, str]]:
    synth = make_synthesizer(model_path, device="cpu")
    mask = make_layout("dense", (2048, 2048), seed=3)
    t0 = time.perf_counter()
    synth(mask, keep=True)
    t_full = time.perf_counter() - t0
    one = make_layout("dense", (synth.tile, synth.tile), seed=4)
    single = make_synthesizer(load_model(model_path), device="cpu", overlap=0)
    t_tile = best_time(lambda: single(one))
    rng = np.random.default_rng(0)
    times, tiles = [], []
    for _ in range(10):  # brush strokes (radius 8) at random places
        y, x = rng.integers(50, 2000, size=2)
        yy, xx = np.ogrid[:2048, :2048]
        mask = mask.copy()
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= 64] = 2
        t0 = time.perf_counter()
        _, regions = synth.update(mask)
        times.append(time.perf_counter() - t0)
        tiles.append(len(regions))
    t_stroke = float(np.median(times))
    return [
        ("2048x2048: full synthesis", f"{t_full:.2f} s"),
        ("one tile", f"{t_tile * 1000:.0f} ms"),
        ("stroke update (median of 10)", f"{t_stroke * 1000:.0f} ms, "
                                          f"{np.mean(tiles):.1f} tiles recomputed on average"),
        ("stroke update / one tile", f"{t_stroke / t_tile:.2f}"),
        ("stroke update / full synthesis", f"{t_stroke / t_full:.3f}"),
    ]


_MEMORY_CHILD = """
import json, resource, sys, time
import numpy as np
import torch
def rss_mb():  # current resident memory
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
from napari_synthgen.registry import make_synthesizer
after_import = rss_mb()
synth = make_synthesizer(sys.argv[1], device="cpu")
loaded = rss_mb()
mask = np.ones((8192, 8192), np.uint8)
mask[::97] = 2
mask[:, ::89] = 2
t0 = time.perf_counter()
image = synth(mask)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_mb": after_import, "loaded_mb": loaded, "peak_mb": peak,
                  "after_mb": rss_mb(), "seconds": dt, "shape": list(image.shape)}))
"""


def memory_8192(model_path: Path) -> list[tuple[str, str]]:
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(model_path)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return [
        ("8192x8192: time", f"{r['seconds']:.0f} s"),
        ("8192x8192: peak RSS of the process", f"{r['peak_mb']:.0f} MB"),
        ("  of which torch and libraries", f"{r['import_mb']:.0f} MB (after import)"),
        ("  model loaded (RSS)", f"{r['loaded_mb']:.0f} MB"),
        ("  after synthesis (RSS)", f"{r['after_mb']:.0f} MB "
                                    f"(mask + image: {2 * 8192 * 8192 / 2**20:.0f} MB)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 8192 x 8192 run")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    with tempfile.TemporaryDirectory() as tmp:
        model = reference_sized_model(Path(tmp) / "unet256_ngf64.safetensors")
        rows = speed_and_error(model)
        rows += stroke_update(model)
        if not args.quick:
            rows += memory_8192(model)
    width = max(len(k) for k, _ in rows)
    print(f"\n{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
