"""brain_audit.phantom.config: PhantomConfig's validation, resolution and defaults, and --shortcut parsing."""

from __future__ import annotations

import pytest

from brain_audit.errors import ConfigError
from brain_audit.phantom.config import DEFAULT_MIMIC_PROBABILITIES, PhantomConfig, parse_shortcut
from brain_audit.phantom.lesions import MIMICS


class TestShortcut:
    def test_defaults_are_clean(self):
        cfg = PhantomConfig()
        assert set(cfg.mimic_probabilities) == set(MIMICS)
        assert all(pb == pn for pb, pn in cfg.mimic_probabilities.values())
        assert cfg.mimic_probabilities == DEFAULT_MIMIC_PROBABILITIES


class TestConfig:
    @pytest.mark.parametrize(
        "kwargs, message",
        [({"prevalence": 1.5}, r"`prevalence` must be in \[0, 1\]. Got 1.5 instead."),
         ({"patients": 0}, r"`patients` must be an integer >= 1. Got 0 instead."),
         ({"size": 32}, r"`size` must be an integer in \[64, 1024\]. Got 32 instead."),
         ({"subtype_mix": {"acute": 1.0}}, r"`subtype_mix` must be keyed by .*Got 'acute' instead."),
         ({"mimic_probabilities": {"coil": (0.3, 1.2)}}, r"`mimic_probabilities\['coil'\]` must be two probabilities"),
         ({"pixel_spacing_mm": 0.1}, r"`pixel_spacing_mm` must be such that size x spacing is 200-400 mm"),
         ({"defect_fraction": -0.1}, r"`defect_fraction` must be in \[0, 1\]. Got -0.1 instead.")],
    )
    def test_invalid(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            PhantomConfig(**kwargs)

    def test_resolved_and_hashable(self):
        cfg = PhantomConfig(size=256, subtype_mix={"subdural": 3, "epidural": 1})
        assert cfg.pixel_spacing_mm == pytest.approx(250 / 256)
        assert cfg.subtype_mix["subdural"] == 0.75 and cfg.subtype_mix["intraventricular"] == 0.0
        assert hash(cfg) == hash(PhantomConfig(size=256, subtype_mix={"epidural": 1, "subdural": 3}))

    @pytest.mark.parametrize("name", ["coil", "catheter", "catheter_metal_tip", "frontal_bone",
                                      "choroid_plexus_calcification", "pineal_calcification", "falx_calcification"])
    def test_parse_shortcut_names(self, name):
        assert parse_shortcut(f"{name}:0.3,0.02") == (name, (0.3, 0.02))
        cfg = PhantomConfig(mimic_probabilities=dict([parse_shortcut(f"{name}:0.3,0.02")]))
        assert cfg.mimic_probabilities[name] == (0.3, 0.02)

    def test_parse_shortcut(self):
        assert parse_shortcut("coil:0.3,0.02") == ("coil", (0.3, 0.02))
        with pytest.raises(ConfigError, match=r"`shortcut` must be '<mimic>:<p_given_bleed>,<p_given_no_bleed>'"):
            parse_shortcut("stent:0.3,0.02")
        with pytest.raises(ConfigError, match="two probabilities"):
            parse_shortcut("coil:0.3,2")
