"""scripts/make_banner.py: the banner is drawn from a run folder's Phase-4 model and a phantom slice.

The script is not part of the package, so it is imported from its path. The model is a tiny untrained
``build_model(image_size=64, weights=None)`` saved as a run folder's ``phase4/model.keras``; the PNG is read
back with matplotlib and its panels counted from the pixels (dark axes on a white figure).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_banner.py"


@pytest.fixture(scope="module")
def banner():
    spec = importlib.util.spec_from_file_location("make_banner", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool array."""
    f = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(f == 1).tolist(), np.flatnonzero(f == -1).tolist(), strict=True))


@pytest.mark.slow
def test_banner_png_from_a_run_folder(banner, tmp_path):
    pytest.importorskip("tensorflow")
    import matplotlib.image as mpimg

    from brain_audit.model import build_model
    from brain_audit.model.weights import save_model

    run = tmp_path / "run"
    save_model(build_model(image_size=64, weights=None, seed=0), run / "phase4" / "model.keras")
    out = tmp_path / "banner.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an untrained model's map may be zero everywhere
        written = banner.main(["--run", str(run), "--out", str(out), "--size", "128", "--patients", "1"])
    assert Path(written) == out and out.stat().st_size < 300_000
    img = mpimg.imread(out)
    assert img.shape[:2] == (400, 1600)
    rgb = img[..., :3]
    band = rgb[int(0.3 * 400):int(0.9 * 400)]  # below the titles, through the panels
    panels = _runs((band < 0.5).any(axis=2).any(axis=0))
    assert len(panels) == 5 and all(280 < stop - start < 330 for start, stop in panels)
    # the windows in their channels: brain red, subdural green, bone blue
    for (start, stop), colour in zip(panels[:3], range(3), strict=True):
        pixels = band[:, start + 3:stop - 3].reshape(-1, 3)  # inside the axes, away from their antialiased edge
        assert pixels[:, colour].max() > 0.5
        others = np.delete(pixels, colour, axis=1)  # zero but for the 256-colour palette's sharing
        assert np.percentile(others, 99) < 0.05 and others.max() < 0.25


def test_missing_model_is_one_line(banner, tmp_path):
    with pytest.raises(SystemExit, match="no Phase-4 model"):
        banner.main(["--run", str(tmp_path), "--out", str(tmp_path / "b.png")])


def test_the_slice_shows_the_bleed_it_names(banner):
    from brain_audit.phantom import MIMICS, PhantomConfig, render_slice

    hu, bleed, info = banner.pick_slice(seed=0, size=64, patients=2)
    assert bleed.any() and info["bleed_px"] == int(bleed.sum())
    assert any(info["labels"][s] for s in banner.SUBTYPES)
    cfg = PhantomConfig(patients=2, size=64, seed=0, prevalence=1.0, subtype_mix={s: 1.0 for s in banner.SUBTYPES},
                        mimic_probabilities={m: (0.0, 0.0) for m in MIMICS}, defect_fraction=0.0)
    expected, _ = render_slice(cfg, info["patient"], info["slice"])
    np.testing.assert_array_equal(hu, expected)
    # no other slice of these patients shows more subdural or intraparenchymal blood
    for i in range(2):
        for k in range(cfg.slices_per_patient):
            _, t = render_slice(cfg, i, k)
            assert (t["subdural"] | t["intraparenchymal"]).sum() <= info["bleed_px"]
