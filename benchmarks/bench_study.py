"""Cost of Phase 5, the study-level sequence model, beside the slice model's own cost.

Inputs: the phantom's own slices (``phantom.generate_cohort``, 256 px files, RSNA layout) read through the HU
cache at ``--size``, and ``model.build_model(--size, weights=None)`` as the slice model (random weights: a trained
model costs the same). Prints:

* embedding extraction (``model.predictions.slice_features``: the slice model's pooled features and scores from
  the cache) in slices/s, and plain slice scoring (``predict_ids``) beside it: the ratio is what keeping the
  embedding costs;
* the sequence model (``model.sequence``, 64 units) on ``--series`` series of ``--length`` slices (the RSNA 2019
  median is about 35 slices a series): seconds per training epoch and slices/s when scoring, against the slice
  model's slices/s: the ratio is the study model's share of a prediction.

    python benchmarks/bench_study.py [--patients 24] [--size 96] [--series 600] [--length 35]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--series", type=int, default=600)
    ap.add_argument("--length", type=int, default=35)
    args = ap.parse_args()

    from brain_audit.dataset.cache import build_cache
    from brain_audit.dataset.cohort import join_images, plan_cohorts
    from brain_audit.dataset.index import build_index
    from brain_audit.dataset.labels import read_labels
    from brain_audit.model.network import build_model
    from brain_audit.model.predictions import predict_ids, slice_features
    from brain_audit.model.sequence import build_sequence_model, compile_sequence_model, embedding_model
    from brain_audit.phantom.cohort import generate_cohort
    from brain_audit.phantom.config import PhantomConfig
    from brain_audit.rsna import TRAIN_CSV
    from brain_audit.dataset.cohort import CohortSpec

    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_cohort(root, PhantomConfig(patients=args.patients, slices_per_patient=12, size=256, seed=0),
                        progress=False)
        labels = read_labels(root / TRAIN_CSV)
        index = build_index(root, Path(tmp) / "index", labels.index, progress=False)
        cohort, _ = plan_cohorts(join_images(labels, index), [CohortSpec("all", 10**6, balance=None)], n_audit=0,
                                 validation=0.5, seed=0)
        cache = build_cache(cohort, root, Path(tmp) / "cache", size=args.size, progress=False)
        ids = list(cache.table.index)
        model = build_model(args.size, weights=None, seed=0)
        embedder = embedding_model(model)
        rates = {"plain": [], "features": []}
        for _ in range(3):  # the first round traces the graphs; the best of the next two is reported
            t = time.perf_counter()
            predict_ids(model, cache, ids, 0)
            rates["plain"].append(len(ids) / (time.perf_counter() - t))
            t = time.perf_counter()
            slice_features(embedder, cache, ids)
            rates["features"].append(len(ids) / (time.perf_counter() - t))
        plain, feats = max(rates["plain"][1:]), max(rates["features"][1:])
    print(f"slice model at {args.size} px on {len(ids)} phantom slices: scores {plain:.1f} slices/s, "
          f"scores + embeddings {feats:.1f} slices/s (ratio {plain / feats:.2f})")

    rng = np.random.default_rng(0)
    s, t_len = args.series, args.length
    inputs = {"embedding": rng.normal(size=(s, t_len, 1280)).astype(np.float32),
              "slice_logit": rng.normal(size=(s, t_len, 1)).astype(np.float32), "mask": np.ones((s, t_len), bool)}
    y = (rng.uniform(size=(s, t_len, 1)) < 0.2).astype(np.float32)
    seq = compile_sequence_model(build_sequence_model(1280, 1, seed=0), 1e-3)
    seq.fit(inputs, y, sample_weight=inputs["mask"].astype(np.float32), epochs=1, batch_size=16, verbose=0)  # trace
    t = time.perf_counter()
    seq.fit(inputs, y, sample_weight=inputs["mask"].astype(np.float32), epochs=2, batch_size=16, verbose=0)
    epoch = (time.perf_counter() - t) / 2
    seq.predict(inputs, batch_size=32, verbose=0)
    t = time.perf_counter()
    seq.predict(inputs, batch_size=32, verbose=0)
    scoring = s * t_len / (time.perf_counter() - t)
    print(f"sequence model, {s} series x {t_len} slices: {epoch:.2f} s per training epoch "
          f"({s * t_len / epoch:.0f} slices/s), scoring {scoring:.0f} slices/s = {scoring / feats:.0f}x the slice "
          f"model's {feats:.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
