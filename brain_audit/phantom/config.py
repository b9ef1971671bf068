"""What a phantom cohort is made of: :class:`PhantomConfig` and its defaults.

A frozen, validated dataclass (sizes in pixels, spacings in mm, probabilities in [0, 1]) whose
:meth:`~PhantomConfig.to_dict` is written to the manifest and rebuilds the same config, so a
cohort can be re-rendered from its manifest. The default subtype mix follows the RSNA 2019
training set (Flanders AE et al., Radiology: AI 2020); the default mimic probabilities are
equal with and without a bleed (no shortcut). :func:`parse_shortcut` reads the CLI's
``--shortcut coil:0.3,0.02``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brain_audit import rsna
from brain_audit.errors import ConfigError
from brain_audit.phantom.lesions import MIMICS

__all__ = [
    "DEFAULT_MIMIC_PROBABILITIES",
    "DEFAULT_SUBTYPE_MIX",
    "GENERATOR_VERSION",
    "PhantomConfig",
    "parse_shortcut",
]


#: Version of the generator written to the manifest; bumped when the same config would
#: give different images.
GENERATOR_VERSION = "1.1"


#: Share of each subtype among lesions, after the RSNA 2019 training set (subdural most
#: frequent, epidural rare).
DEFAULT_SUBTYPE_MIX: dict[str, float] = {
    "epidural": 0.05,
    "intraparenchymal": 0.25,
    "intraventricular": 0.16,
    "subarachnoid": 0.22,
    "subdural": 0.32,
}


#: Per-image probability of each mimic given a bleed / no bleed: equal, i.e. no shortcut.
#: Physiologic calcifications are common at their levels; devices are rare.
DEFAULT_MIMIC_PROBABILITIES: dict[str, tuple[float, float]] = {
    "choroid_plexus_calcification": (0.15, 0.15),
    "pineal_calcification": (0.10, 0.10),
    "falx_calcification": (0.05, 0.05),
    "coil": (0.01, 0.01),
    "catheter": (0.01, 0.01),
    "catheter_metal_tip": (0.01, 0.01),
    "frontal_bone": (0.02, 0.02),
}


_CORRUPT_KINDS = ("truncated", "header_only")


def _fail(name: str, rule: str, value: Any) -> ConfigError:
    return ConfigError(f"`{name}` must be {rule}. Got {value!r} instead.")


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of one phantom cohort (everything the files depend on).

    Attributes:
        patients: number of patients (one study, one series each); >= 1.
        slices_per_patient: contiguous axial slices per study; 1..128.
        size: rows = columns of every slice, pixels; 64..1024.
        pixel_spacing_mm: in-plane spacing; ``None`` gives a 250 mm field of view
            (0.488 mm at 512, RSNA-typical). The field of view must be 200-400 mm.
        slice_spacing_mm: distance between slices (= slice thickness), mm; (0, 20].
        prevalence: share of patients with a bleed, [0, 1].
        subtype_mix: subtype -> weight of that subtype among a bleeding patient's lesions
            (1-3 distinct subtypes per bleeding patient); keys from ``rsna.SUBTYPES``,
            missing keys weigh 0 once any key is given.
        chronic_subdural_fraction: share of subdural hematomas that are chronic (14-28 HU
            instead of 55-78 HU), [0, 1].
        mimic_probabilities: mimic -> (p_given_bleed, p_given_no_bleed), per image; keys
            from :data:`MIMICS`, missing keys take :data:`DEFAULT_MIMIC_PROBABILITIES`.
        defect_fraction: share of slices written with the RSNA 12-bit wrap defect, [0, 1].
        corrupt_files: extra unreadable files (alternately truncated and header-only).
        seed: non-negative integer.
        test_patients: patients of a held-out test split written as Kaggle's ``stage_2_test``
            (their labels only under ``phantom_truth/``); 0: no test split.
    """

    patients: int = 20
    slices_per_patient: int = 20
    size: int = 512
    pixel_spacing_mm: float | None = None
    slice_spacing_mm: float = 5.0
    prevalence: float = 0.4
    subtype_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SUBTYPE_MIX))
    chronic_subdural_fraction: float = 0.15
    mimic_probabilities: Mapping[str, Sequence[float]] = field(
        default_factory=lambda: dict(DEFAULT_MIMIC_PROBABILITIES))
    defect_fraction: float = 0.02
    corrupt_files: int = 0
    seed: int = 0
    test_patients: int = 0

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        for name, lo, hi in (("patients", 1, None), ("slices_per_patient", 1, 128), ("size", 64, 1024),
                             ("corrupt_files", 0, None), ("seed", 0, None), ("test_patients", 0, None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
                rule = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
                raise _fail(name, rule, v)
            set_(name, int(v))
        spacing = self.pixel_spacing_mm
        if spacing is None:
            spacing = 250.0 / self.size
        if not isinstance(spacing, (int, float)) or not 200.0 <= spacing * self.size <= 400.0:
            raise _fail("pixel_spacing_mm", f"such that size x spacing is 200-400 mm (size {self.size})",
                        self.pixel_spacing_mm)
        set_("pixel_spacing_mm", float(spacing))
        if not isinstance(self.slice_spacing_mm, (int, float)) or not 0 < self.slice_spacing_mm <= 20:
            raise _fail("slice_spacing_mm", "in (0, 20]", self.slice_spacing_mm)
        set_("slice_spacing_mm", float(self.slice_spacing_mm))
        for name in ("prevalence", "chronic_subdural_fraction", "defect_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise _fail(name, "in [0, 1]", v)
            set_(name, float(v))
        mix = dict(self.subtype_mix)
        unknown = sorted(set(mix) - set(rsna.SUBTYPES))
        if unknown:
            raise _fail("subtype_mix", f"keyed by {rsna.SUBTYPES}", unknown[0])
        mix = {s: mix.get(s, 0.0) for s in rsna.SUBTYPES}
        if any(not isinstance(v, (int, float)) or v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise _fail("subtype_mix", "non-negative weights with a positive sum", dict(self.subtype_mix))
        total = float(sum(mix.values()))
        set_("subtype_mix", {s: float(v) / total for s, v in mix.items()})
        probs = dict(self.mimic_probabilities)
        unknown = sorted(set(probs) - set(MIMICS))
        if unknown:
            raise _fail("mimic_probabilities", f"keyed by {MIMICS}", unknown[0])
        resolved = {}
        for m in MIMICS:
            pair = probs.get(m, DEFAULT_MIMIC_PROBABILITIES[m])
            try:
                pb, pn = (float(x) for x in pair)
            except (TypeError, ValueError):
                raise _fail(f"mimic_probabilities[{m!r}]", "a pair (p_given_bleed, p_given_no_bleed)", pair) from None
            if not (0.0 <= pb <= 1.0 and 0.0 <= pn <= 1.0):
                raise _fail(f"mimic_probabilities[{m!r}]", "two probabilities in [0, 1]", pair)
            resolved[m] = (pb, pn)
        set_("mimic_probabilities", resolved)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (mimic pairs as lists); ``PhantomConfig(**d)`` rebuilds the config.

        ``test_patients`` is left out when 0, so a cohort without a test split records the
        parameters it recorded before the split existed (same manifest, same resume check).
        """
        d = dataclasses.asdict(self)
        if not self.test_patients:
            del d["test_patients"]
        d["subtype_mix"] = dict(self.subtype_mix)
        d["mimic_probabilities"] = {m: list(v) for m, v in self.mimic_probabilities.items()}
        return d

    @property
    def images(self) -> int:
        """Number of readable images (patients x slices)."""
        return self.patients * self.slices_per_patient

    @property
    def test_images(self) -> int:
        """Number of test-split images (test patients x slices)."""
        return self.test_patients * self.slices_per_patient


def parse_shortcut(text: str) -> tuple[str, tuple[float, float]]:
    """Parse ``"coil:0.3,0.02"`` into ``("coil", (0.3, 0.02))`` (mimic: p_given_bleed, p_given_no_bleed).

    The mimic is any name of :data:`~brain_audit.phantom.lesions.MIMICS`: the seed's shortcuts are
    ``coil``, ``catheter`` (polymer), ``catheter_metal_tip``, ``frontal_bone`` and the calcifications,
    named one at a time (``choroid_plexus_calcification``, ``pineal_calcification``,
    ``falx_calcification``).
    """
    name, sep, rest = text.partition(":")
    parts = rest.split(",")
    if not sep or name not in MIMICS or len(parts) != 2:
        raise _fail("shortcut", f"'<mimic>:<p_given_bleed>,<p_given_no_bleed>' with a mimic of {MIMICS}", text)
    try:
        pb, pn = float(parts[0]), float(parts[1])
    except ValueError:
        raise _fail("shortcut", "two numbers after the colon", text) from None
    if not (0.0 <= pb <= 1.0 and 0.0 <= pn <= 1.0):
        raise _fail("shortcut", "two probabilities in [0, 1]", text)
    return name, (pb, pn)

