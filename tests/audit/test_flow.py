"""brain_audit.audit.flow: the audit's flow counts from a run folder written by hand."""

from __future__ import annotations

import json

import pandas as pd

from brain_audit.audit.flow import audit_flow, flow_stages
from brain_audit.run_layout import RunPaths


def _run(tmp_path):
    paths = RunPaths(tmp_path)
    paths.cohort.mkdir(parents=True)
    paths.cache.mkdir(parents=True)
    cohort = pd.DataFrame({
        "image_id": [f"ID_{i:03d}" for i in range(10)],
        "patient_id": ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"],
        "split": ["train"] * 4 + ["validation"] * 2 + ["audit"] * 4,
    })
    cohort.to_csv(paths.cohort / "cohort.csv", index=False)
    pd.DataFrame({"image_id": ["ID_009"], "file": ["x.dcm"], "reason": ["(7FE0,0010) Pixel Data is missing"]}).to_csv(
        paths.cache / "skipped.csv", index=False)
    paths.data_summary.write_text(json.dumps({
        "labels": {"images": 13, "rows_refused": 0},
        "index": {"indexed": 10, "skipped": 3, "skipped_by_reason": {"truncated": 2, "not DICOM": 1}},
        "join": {"labelled_without_file": 3, "indexed_without_labels": 0},
    }))
    return paths


def test_counts_add_up_and_a_lost_slice_shows(tmp_path):
    paths = _run(tmp_path)
    audited = pd.DataFrame({"image_id": ["ID_006", "ID_007", "ID_008"], "patient_id": ["d", "d", "e"]})
    patients = pd.DataFrame({"patient_id": ["d", "e"], "label_any": [1, 0], "called_bleed": [False, True]})
    flow = audit_flow(paths, audited, patients, generated={"images": 13, "patients": 5})
    a = flow["audit"]
    # by hand: 4 audit slices = 3 audited + 1 skipped by the cache (ID_009)
    assert a["cohort_slices"] == 4 and a["audited_slices"] == 3 and a["skipped_by_cache"] == 1
    assert flow["adds_up"] and a["not_audited_without_reason"] == []
    assert (a["false_negative"], a["false_positive"], a["true_positive"], a["true_negative"]) == (1, 1, 0, 0)
    assert flow["splits"] == {"audit": {"patients": 2, "slices": 4}, "train": {"patients": 2, "slices": 4},
                              "validation": {"patients": 1, "slices": 2}}
    stages = flow_stages(flow)
    assert stages[0]["text"].startswith("Generated (synthetic phantom): 13 images of 5 patients")
    assert "3 unreadable files" in stages[1]["excluded"] and "2 x truncated" in stages[1]["excluded"]
    assert "1 slices the cache could not use" in stages[3]["excluded"]
    assert "missed 1" in stages[-1]["split"][0] and "false alarm 1" in stages[-1]["split"][1]
    # one audited slice fewer, with no record why: the flow says it does not add up and names it
    lost = audit_flow(paths, audited.iloc[:2], patients)
    assert not lost["adds_up"] and lost["audit"]["not_audited_without_reason"] == ["ID_008"]
