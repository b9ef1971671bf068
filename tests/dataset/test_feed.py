"""brain_audit.dataset.feed: tf.data batches of the HU cache and their augmentation, against the HU and
labels written into the tiny RSNA-layout dataset (tests/support/tiny_rsna.py)."""

from __future__ import annotations

import numpy as np
import pytest

from brain_audit.dataset.cache import load_split_arrays
from brain_audit.errors import CacheError
from brain_audit.rsna import LABEL_COLUMNS
from support.tiny_rsna import AIR, SIDE


def _batches(ds):
    hu, y, w = zip(*[(a.numpy(), b.numpy(), c.numpy()) for a, b, c in ds])
    return np.concatenate(hu), np.concatenate(y), np.concatenate(w)


def _identify(hu: np.ndarray, truth: dict) -> str:
    """The image ID whose written HU equal ``hu`` (random images: unique)."""
    hits = [i for i, t in truth.items() if np.array_equal(t["hu"], hu)]
    assert len(hits) == 1
    return hits[0]


class TestFeed:
    def test_unshuffled_batches_are_the_cached_hu_with_the_csv_labels(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids, ref_hu, _ = load_split_arrays(out, "train")
        ds = make_feed(out, "train", 4, labels="six", shuffle=False)
        assert int(ds.cardinality()) == -(-len(ids) // 4)
        first = next(iter(ds))
        assert [t.dtype.name for t in first] == ["float32", "float32", "float32"]
        assert first[0].shape == (4, SIDE, SIDE, 1) and first[1].shape == (4, 6) and first[2].shape == (4,)
        hu, y, w = _batches(ds)
        np.testing.assert_array_equal(hu, ref_hu)
        expected = np.array([[truth[i]["labels"][c] for c in LABEL_COLUMNS] for i in ids], dtype=np.float32)
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(w, np.ones(len(ids), np.float32))
        _, y_any, _ = _batches(make_feed(out, "train", 5, labels="any", shuffle=False))
        np.testing.assert_array_equal(y_any, expected[:, 5:6])

    def test_shuffled_epoch_keeps_each_image_with_its_label(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids = list(load_split_arrays(out, "train")[0])
        hu, y, _ = _batches(make_feed(out, "train", 3, labels="six", shuffle=True, seed=1))
        seen = [_identify(hu[k, ..., 0], truth) for k in range(len(hu))]
        assert sorted(seen) == sorted(ids) and seen != ids
        for k, image_id in enumerate(seen):
            assert list(y[k]) == [truth[image_id]["labels"][c] for c in LABEL_COLUMNS]
        again, _, _ = _batches(make_feed(out, "train", 3, shuffle=True, seed=1))
        np.testing.assert_array_equal(again, hu)
        other, _, _ = _batches(make_feed(out, "train", 3, shuffle=True, seed=2))
        assert not np.array_equal(other, hu)

    def test_repeat_reshuffles_every_epoch(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, out = tiny_cache
        n = len(load_split_arrays(out, "train")[0])
        ds = make_feed(out, "train", n, shuffle=True, seed=3, repeat=True)
        e1, e2 = [b[0].numpy() for b, _ in zip(ds, range(2))]
        ids1 = [_identify(x[..., 0], truth) for x in e1]
        ids2 = [_identify(x[..., 0], truth) for x in e2]
        assert sorted(ids1) == sorted(ids2) and ids1 != ids2

    def test_epoch_replays_what_the_stream_gave(self, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, out = tiny_cache
        stream = make_feed(out, "train", 4, seed=4, augment=True, repeat=True)
        per_epoch = -(-len(load_split_arrays(out, "train")[0]) // 4)
        second = [b[0].numpy() for b, _ in zip(stream, range(2 * per_epoch))][per_epoch:]
        alone = [b[0].numpy() for b in make_feed(out, "train", 4, seed=4, augment=True, epoch=1)]
        assert len(alone) == per_epoch
        for a, b in zip(alone, second):
            np.testing.assert_array_equal(a, b)
        first = [b[0].numpy() for b in make_feed(out, "train", 4, seed=4, augment=True, epoch=0)]
        assert not np.array_equal(first[0], alone[0])

    def test_sample_weights_and_repeats(self, tiny, tiny_cache):
        from brain_audit.dataset.feed import feed_length, make_feed

        _, truth = tiny
        _, out = tiny_cache
        ids = list(load_split_arrays(out, "train")[0])
        hard = ids[2]
        hu, y, w = _batches(make_feed(out, "train", 4, shuffle=False, sample_weights={hard: 3.5},
                                      repeats={ids[0]: 3}))
        seen = [_identify(hu[k, ..., 0], truth) for k in range(len(hu))]
        assert seen.count(ids[0]) == 3 and len(seen) == len(ids) + 2
        assert w[seen.index(hard)] == 3.5 and w.sum() == len(seen) - 1 + 3.5
        assert feed_length(out, "train", 4, repeats={ids[0]: 3}) == -(-(len(ids) + 2) // 4)
        with pytest.warns(RuntimeWarning, match="1 `sample_weights` ID"):
            make_feed(out, "train", 4, sample_weights={"ID_nothere": 2.0})
        with pytest.raises(ValueError, match="`sample_weights` must be finite and >= 0. Got -1.0"):
            make_feed(out, "train", 4, sample_weights={hard: -1})
        with pytest.raises(ValueError, match="`batch_size` must be > 0. Got 0 instead."):
            make_feed(out, "train", 0)

    def test_cohort_filter_and_context_channels(self, tiny, tiny_cohort, tiny_cache):
        from brain_audit.dataset.feed import make_feed

        _, truth = tiny
        _, cohort, _ = tiny_cohort
        _, out = tiny_cache
        hu, y, _ = _batches(make_feed(out, "train", 4, cohort="phase1", shuffle=False, context=1))
        want = cohort[cohort["in_phase1"] & (cohort["split"] == "train")].index
        want = [i for i in want if i in truth]
        assert hu.shape == (len(want), SIDE, SIDE, 3)
        ids, ref, _ = load_split_arrays(out, "train", cohort="phase1", context=1)
        assert list(ids) == sorted(want)
        np.testing.assert_array_equal(hu, ref)
        with pytest.raises(CacheError, match="no cohort 'phase9'"):
            make_feed(out, "train", 4, cohort="phase9")

    def test_augmentation_identity_flip_and_centred_rotation(self, tiny_cache):
        from brain_audit.dataset.feed import Augment, make_feed

        _, out = tiny_cache
        base, _, _ = _batches(make_feed(out, "train", 4, shuffle=False))
        none = Augment(rotation_deg=0, shift=0, zoom=0, flip=False, hu_offset=0, hu_gain=0)
        same, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, augment=none))
        np.testing.assert_allclose(same, base, atol=1e-3)
        flips, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                         augment=dataclasses_replace(none, flip=True)))
        mirrored = [np.allclose(f, b[:, ::-1], atol=1e-3) for f, b in zip(flips, base)]
        kept = [np.allclose(f, b, atol=1e-3) for f, b in zip(flips, base)]
        assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
        # strong rotation of real slices: corners stay air, the brain's centre stays brain
        rot, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                       augment=dataclasses_replace(none, rotation_deg=30.0)))
        assert not np.allclose(rot, base, atol=1.0)
        assert (rot[:, 0, 0] == -1024.0).all() or (rot[:, 0, 0] <= AIR).all()
        c = SIDE // 2
        assert np.all(np.abs(rot[:, c - 1 : c + 1, c - 1 : c + 1] - 30) < 60)
        jit, _, _ = _batches(make_feed(out, "train", 4, shuffle=False, seed=5,
                                       augment=dataclasses_replace(none, hu_offset=5.0)))
        air = base <= AIR
        np.testing.assert_array_equal(jit[air], base[air])
        d = jit[~air] - base[~air]
        assert np.abs(d).max() <= 5.0 + 1e-3 and np.abs(d).max() > 0
        a1, _, _ = _batches(make_feed(out, "train", 4, seed=9, augment=True))
        a2, _, _ = _batches(make_feed(out, "train", 4, seed=9, augment=True))
        np.testing.assert_array_equal(a1, a2)


class TestAugmentBatch:
    def test_channels_stay_registered_input_untouched_and_seeded(self):
        from brain_audit.dataset.feed import Augment, augment_batch

        rng = np.random.default_rng(0)
        one = rng.integers(-1000, 1500, size=(6, 24, 24, 1)).astype(np.float32)
        three = np.repeat(one, 3, axis=-1)
        keep = three.copy()
        out = augment_batch(three, Augment(rotation_deg=20, shift=0.1, zoom=0.1), np.random.default_rng(5))
        np.testing.assert_array_equal(three, keep)
        np.testing.assert_array_equal(out[..., 0], out[..., 2])  # 2.5D neighbours move together
        again = augment_batch(three, Augment(rotation_deg=20, shift=0.1, zoom=0.1), np.random.default_rng(5))
        np.testing.assert_array_equal(out, again)
        assert out.shape == three.shape and out.dtype == np.float32
        none = Augment(rotation_deg=0, shift=0, zoom=0, flip=False, hu_offset=0, hu_gain=0)
        np.testing.assert_array_equal(augment_batch(one, none, np.random.default_rng(1)), one)

    def test_bad_ranges(self):
        from brain_audit.dataset.feed import Augment

        with pytest.raises(ValueError, match="`zoom` must be in \\[0, 1\\). Got 1.5 instead."):
            Augment(zoom=1.5)
        with pytest.raises(ValueError, match="`rotation_deg` must be >= 0. Got -1 instead."):
            Augment(rotation_deg=-1)


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)
