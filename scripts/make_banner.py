"""Draw the README / notebook banner: one synthetic phantom bleed slice, its windows and a model's attention.

Five panels, left to right: the brain (W80 L40, red), subdural (W200 L80, green) and bone (W2800 L600, blue)
windows of :data:`brain_audit.windowing.BSB`, each in its channel's colour; their RGB composite; and the
audit's class-activation map (:func:`brain_audit.gradcam.maps.audit_cam`, of the logit of ``any``) of a trained
model over the brain window, with the bleed's truth contour. The slice is rendered in memory by
:mod:`brain_audit.phantom` (no file is read or written but the PNG); it is the slice with the largest subdural
or intraparenchymal bleed among the first ``--patients`` patients of ``--seed`` (bleeding patients only,
no mimics), so the same arguments draw the same slice. The model sees the slice as every model input is
made (:func:`brain_audit.dataset.cache.preprocess_slice` to its input size).

The committed ``notebooks/banner.png`` was drawn from the demo's run folder with::

    python scripts/make_banner.py --run demo_out --out notebooks/banner.png

This script is not part of the package and nothing imports it.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

TITLE = "brain_audit — synthetic phantom slice, not a patient"

#: The bleeds the banner looks for (large, easy to see at banner size).
SUBTYPES = ("subdural", "intraparenchymal")

#: Figure size in inches at :data:`DPI`: 1600 x 400 px.
FIGSIZE = (16.0, 4.0)
DPI = 100


def pick_slice(seed: int = 0, size: int = 512, patients: int = 4) -> tuple[np.ndarray, np.ndarray, dict]:
    """The phantom slice with the largest subdural or intraparenchymal bleed among ``patients`` patients.

    Returns:
        ``(hu, bleed, info)``: float32 (size, size) HU, bool (size, size) union of the subdural and
        intraparenchymal truth masks, and ``{"patient": i, "slice": k, "labels": ..., "bleed_px": n}``.
    """
    from brain_audit.phantom import MIMICS, PhantomConfig, build_patient, render

    cfg = PhantomConfig(patients=patients, size=size, seed=seed, prevalence=1.0,
                        subtype_mix={s: 1.0 for s in SUBTYPES}, mimic_probabilities={m: (0.0, 0.0) for m in MIMICS},
                        defect_fraction=0.0)
    best = None
    for i in range(patients):
        pat = build_patient(cfg, i)
        for k in range(cfg.slices_per_patient):
            hu, masks, info = render(pat, k, cfg.mimic_probabilities)
            bleed = np.logical_or.reduce([masks[s] for s in SUBTYPES])
            n = int(bleed.sum())
            if best is None or n > best[2]["bleed_px"]:
                best = (hu, bleed, {"patient": i, "slice": k, "labels": info["labels"], "bleed_px": n})
    if best is None or best[2]["bleed_px"] == 0:
        raise SystemExit(f"no subdural or intraparenchymal bleed among {patients} patients of seed {seed}")
    return best


def attention(model_path: Path, hu: np.ndarray) -> tuple[np.ndarray, float, str]:
    """The audit's map of the model at ``model_path`` for one HU slice.

    Returns:
        ``(cam, probability, method)``: float32 map in [0, 1] at the slice's (H, W), the model's
        probability of ``any`` (sigmoid of the logit) and the map's name with its native cells.
    """
    from brain_audit.dataset.cache import preprocess_slice
    from brain_audit.gradcam.maps import AUDIT_METHOD, audit_cam, resize_map
    from brain_audit.model.weights import load_model

    model = load_model(model_path, compile=False)
    size = int(model.inputs[0].shape[1])
    x = preprocess_slice(hu, size).astype(np.float32)[None, ..., None]
    cam_fn = audit_cam(model)
    cam, logits = cam_fn(x, return_logits=True)
    probability = float(1.0 / (1.0 + np.exp(-float(logits[0, 0]))))
    h, w = cam_fn.cells
    method = {"hirescam": "HiResCAM", "gradcam": "Grad-CAM"}.get(AUDIT_METHOD, AUDIT_METHOD)
    return resize_map(cam[0], hu.shape), probability, f"{method} {h} x {w} cells, {size} px input"


def draw(out: Path, hu: np.ndarray, bleed: np.ndarray, cam: np.ndarray, caption: str) -> Path:
    """Write the five-panel banner PNG (``FIGSIZE`` at ``DPI``) to ``out``."""
    from brain_audit.figures import pyplot
    from brain_audit.provenance import atomic_write_bytes
    from brain_audit.windowing import BSB, window

    plt = pyplot()
    fig, axes = plt.subplots(1, 5, figsize=FIGSIZE)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.01, top=0.84, wspace=0.03)
    channels = [window(hu, c, w) for c, w in BSB]
    names = ("brain", "subdural", "bone")
    for i, (ch, (c, w), name) in enumerate(zip(channels, BSB, names, strict=True)):
        tinted = np.zeros(hu.shape + (3,), np.float32)
        tinted[..., i] = ch
        axes[i].imshow(tinted, interpolation="antialiased")
        axes[i].set_title(f"{name} W{w:g} L{c:g} → {('red', 'green', 'blue')[i]}", fontsize=11)
    axes[3].imshow(np.stack(channels, axis=-1), interpolation="antialiased")
    axes[3].set_title("RGB composite (the model's windows)", fontsize=11)
    axes[4].imshow(channels[0], cmap="gray", vmin=0, vmax=1)
    axes[4].imshow(np.clip(cam, 0, 1), cmap="jet", alpha=0.4, vmin=0, vmax=1)
    axes[4].contour(bleed.astype(np.float32), levels=[0.5], colors="lime", linewidths=1.0)
    axes[4].set_title("attention, truth contour (lime)", fontsize=11)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{TITLE}\n{caption}", fontsize=12, y=0.995)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # no tight bbox (figures.save_figure's): the size stays FIGSIZE x DPI
    plt.close(fig)
    # a 256-colour palette (Pillow, matplotlib's own dependency) halves the file; the noise costs the bytes
    from PIL import Image

    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(small, "PNG", optimize=True)
    return atomic_write_bytes(out, small.getvalue())


def main(argv: list[str] | None = None) -> Path:
    """Parse the arguments, draw the banner and return the PNG's path."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run folder holding phase4/model.keras")
    p.add_argument("--out", type=Path, default=Path("notebooks/banner.png"), help="PNG to write")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="phantom slice side, px (default: %(default)s)")
    p.add_argument("--patients", type=int, default=4, help="patients searched for the slice (default: %(default)s)")
    args = p.parse_args(argv)
    model_path = args.run / "phase4" / "model.keras"
    if not model_path.is_file():
        raise SystemExit(f"{model_path}: no Phase-4 model; pass a finished run folder with --run")
    hu, bleed, info = pick_slice(args.seed, args.size, args.patients)
    cam, probability, method = attention(model_path, hu)
    found = ", ".join(s for s in SUBTYPES if info["labels"][s])
    caption = (f"seed {args.seed}, patient {info['patient']}, slice {info['slice']}: {found}  |  "
               f"p(any) = {probability:.2f}  |  {method}")
    return draw(args.out, hu, bleed, cam, caption)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
