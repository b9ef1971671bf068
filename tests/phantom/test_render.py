"""brain_audit.phantom.render: slices drawn with the requested mimic frequencies, counterfactual re-renders that
differ only inside the mimic, and the preview picture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brain_audit import rsna
from brain_audit.errors import ConfigError
from brain_audit.phantom.config import PhantomConfig
from brain_audit.phantom.lesions import MIMICS
from brain_audit.phantom.render import preview, render_counterfactual, render_image, render_slice
from brain_audit.phantom.truth import load_manifest


class TestShortcut:
    def test_planted_shortcut_has_the_requested_conditional_frequencies(self):
        p_bleed, p_none = 0.6, 0.05
        cfg = PhantomConfig(patients=40, slices_per_patient=10, size=64, prevalence=0.8, seed=3,
                            mimic_probabilities={"coil": (p_bleed, p_none)})
        counts = {0: [0, 0], 1: [0, 0]}  # any -> [images, with coil]
        for p in range(cfg.patients):
            for k in range(cfg.slices_per_patient):
                _, t = render_slice(cfg, p, k)
                any_ = int(any(t[s].any() for s in rsna.SUBTYPES))
                counts[any_][0] += 1
                counts[any_][1] += int(t["coil"].any())
        for any_, p in ((1, p_bleed), (0, p_none)):
            n, k = counts[any_]
            assert n >= 60
            tol = 4 * math.sqrt(p * (1 - p) / n)  # 4 binomial sigma
            assert abs(k / n - p) <= tol, (any_, k, n)


class TestCounterfactual:
    def test_differs_only_inside_the_mimic(self, cohort):
        man = load_manifest(cohort)
        checked = set()
        for r in man["images"]:
            orig, t0 = render_image(cohort, r["image_id"])
            for m in MIMICS:
                present = m in r["mimics"]
                cf, t1 = render_counterfactual(cohort, r["image_id"], m, not present)
                assert t1[m].any() != present
                allowed = t0[m] | t1[m]
                if m == "coil":
                    allowed = allowed | t0["coil_streaks"] | t1["coil_streaks"]
                changed = cf != orig
                assert changed.any() and not (changed & ~allowed).any(), (r["image_id"], m)
                for key in ("head", "skull", "intracranial") + rsna.SUBTYPES:
                    np.testing.assert_array_equal(t0[key], t1[key])
                same, _ = render_counterfactual(cohort, r["image_id"], m, present)
                np.testing.assert_array_equal(same, orig)
                checked.add((m, present))
            if len(checked) == 2 * len(MIMICS):
                break
        assert {m for m, _ in checked} == set(MIMICS)

    def test_unknown_mimic(self, cohort):
        image_id = load_manifest(cohort)["images"][0]["image_id"]
        with pytest.raises(ConfigError, match=r"`mimic` must be one of .*Got 'stent' instead\."):
            render_counterfactual(cohort, image_id, "stent", True)


def test_preview(cohort, tmp_path):
    out = preview(cohort, tmp_path / "p.png", n=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
