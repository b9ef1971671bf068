"""Time the clinical audit's statistics and report on a finished audit folder (no model needed).

Reads a ``clinical_audit_report/`` written by ``brain-audit demo`` or ``brain-audit audit`` (its ``slices.csv``,
``patients.csv``, ``validation.csv``) and times, on those very predictions:

* ``operating_point_report`` at slice level (patient-cluster bootstrap, BCa AUC) and at patient level;
* ``subgroup_report`` (every subtype and mimic, with and without);
* ``calibration_section`` (calibration fits with patient-bootstrap intervals, Platt on validation);
* ``write_report`` (every figure, ``summary.md`` and the self-contained ``index.html``), into a copy.

    python benchmarks/bench_audit.py demo_out/clinical_audit_report [--n-boot 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd


def _timed(name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"{name:<44} {time.perf_counter() - t0:8.2f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a finished clinical_audit_report/ folder")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()

    from brain_audit.audit.report import write_report
    from brain_audit.audit.sections import calibration_section
    from brain_audit.audit.statistics import operating_point_report, patient_level
    from brain_audit.audit.subgroups import subgroup_report

    d = args.report
    summary = json.loads((d / "summary.json").read_text())
    slices = pd.read_csv(d / "slices.csv", dtype={"image_id": str, "patient_id": str})
    patients = pd.read_csv(d / "patients.csv", dtype={"patient_id": str}, keep_default_na=False)
    patients["subtypes_present"] = patients["subtypes_present"].map(lambda s: s.split() if s else [])
    validation = pd.read_csv(d / "validation.csv", dtype={"image_id": str, "patient_id": str})
    op = summary["operating_point"]
    y, p, g = slices["label"].to_numpy(), slices["probability"].to_numpy(), slices["patient_id"].to_numpy()
    print(f"{len(slices)} audit slices of {slices['patient_id'].nunique()} patients, {len(validation)} validation "
          f"slices; n_boot {args.n_boot}; 2-core figures in benchmarks/README.md")
    _timed("operating_point_report, slices (clustered)", operating_point_report, y, p, op["threshold"], groups=g,
           n_boot=args.n_boot)
    _, yp, pp = patient_level(g, y, p)
    _timed("operating_point_report, patients", operating_point_report, yp, pp,
           op.get("patient_threshold") or op["threshold"], n_boot=args.n_boot)
    mimics = [c[len("mimic_"):] for c in slices.columns if c.startswith("mimic_")]
    _timed(f"subgroup_report (5 subtypes, {len(mimics)} mimics)", subgroup_report, slices, patients, mimics,
           n_boot=args.n_boot)
    _timed("calibration_section", calibration_section, slices, validation, n_boot=args.n_boot)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "report"
        shutil.copytree(d, copy)
        page = _timed("write_report (figures, summary.md, index.html)", write_report, copy, n_boot=args.n_boot)
        print(f"index.html: {page.stat().st_size / 1e6:.1f} MB, every figure embedded")


if __name__ == "__main__":
    main()
