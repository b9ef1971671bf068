"""brain_audit.figures: PNG files written through save_figure, read back with PIL; pyplot on the Agg backend."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib
import numpy as np
from PIL import Image

from brain_audit import figures


def test_save_figure_writes_a_decodable_png_of_the_figure(tmp_path):
    plt = figures.pyplot()
    fig = plt.figure(figsize=(2.0, 1.0))
    # a red rectangle over the whole figure: the tight bounding box is the figure, plus matplotlib's
    # default pad of 0.1 inch on every side
    fig.patches.append(matplotlib.patches.Rectangle((0, 0), 1, 1, transform=fig.transFigure, color="red"))
    path = figures.save_figure(fig, tmp_path / "sub" / "f.png", dpi=50)
    assert path == tmp_path / "sub" / "f.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (round((2.0 + 0.2) * 50), round((1.0 + 0.2) * 50))  # (110, 60)
        rgb = np.asarray(img.convert("RGB"))
    assert tuple(rgb[30, 55]) == (255, 0, 0)  # the figure's centre
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # the pad: white
    assert not plt.fignum_exists(fig.number)  # closed
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary file left


def test_default_resolution_is_110_dpi(tmp_path):
    plt = figures.pyplot()
    fig = plt.figure(figsize=(1.0, 1.0))
    fig.patches.append(matplotlib.patches.Rectangle((0, 0), 1, 1, transform=fig.transFigure, color="black"))
    with Image.open(figures.save_figure(fig, tmp_path / "d.png")) as img:
        assert img.size == (round(1.2 * 110), round(1.2 * 110))


def test_pyplot_is_matplotlib_pyplot():
    import matplotlib.pyplot

    assert figures.pyplot() is matplotlib.pyplot


def test_importing_figures_imports_no_matplotlib_and_pyplot_picks_agg():
    code = ("import sys; import brain_audit.figures as f; light = 'matplotlib' not in sys.modules; "
            "plt = f.pyplot(); import matplotlib; print(light, matplotlib.get_backend().lower())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-2:] == ["True", "agg"], out.stdout + out.stderr
