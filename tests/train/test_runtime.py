"""brain_audit.train.runtime: resumable training and device strategy (CPU only, tiny models)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from brain_audit.train.runtime import distribution_strategy, fit_resumable, precision_for_devices, reseed_model

TINY = textwrap.dedent(
    """
    import numpy as np, keras, tensorflow as tf

    def build():
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        return m

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 8)).astype("float32")
    y = (X[:, 0] > 0).astype("float32")

    def data(epoch):
        return tf.data.Dataset.from_tensor_slices((X, y)).shuffle(256, seed=epoch).batch(32)
    """
)
_NS: dict = {}
exec(TINY, _NS)  # the same tiny model and data the subprocess tests run
build, data = _NS["build"], _NS["data"]


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    m_full, h_full = fit_resumable(build, data, tmp_path / "a", 4, seed=3, verbose=0)
    fit_resumable(build, data, tmp_path / "b", 2, seed=3, verbose=0)  # "killed" after epoch 2
    m_res, h_res = fit_resumable(build, data, tmp_path / "b", 4, seed=3, verbose=0)
    for a, b in zip(m_full.get_weights(), m_res.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [r["loss"] for r in h_full] == [r["loss"] for r in h_res]
    hist = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert hist[0].startswith("epoch,loss") and len(hist) == 5


def test_rerun_of_finished_phase_trains_nothing(tmp_path):
    m1, _ = fit_resumable(build, data, tmp_path, 2, seed=1, verbose=0)
    calls = []
    m2, h = fit_resumable(lambda: calls.append(1), lambda e: calls.append(e), tmp_path, 2, seed=1, verbose=0)
    assert calls == [] and len(h) == 2
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_weights(tmp_path):
    """A real SIGKILL in the middle of epoch 3, then a rerun."""
    script = tmp_path / "run.py"
    script.write_text(
        TINY
        + textwrap.dedent(
            """
            import sys, os, signal, keras
            from brain_audit.train import fit_resumable
            out, kill = sys.argv[1], sys.argv[2] == "kill"
            class Kill(keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    if kill and self.model.optimizer.iterations.numpy() == 8 * 2 + 3:
                        os.kill(os.getpid(), signal.SIGKILL)
            m, h = fit_resumable(build, data, out, 4, seed=5, verbose=0, callbacks=[Kill()])
            np.save(os.path.join(out, "w.npy"), np.concatenate([w.ravel() for w in m.get_weights()]))
            """
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "k"), "kill"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert '"completed_epochs": 2' in (tmp_path / "k" / "checkpoint" / "state.json").read_text()
    for args in ((str(tmp_path / "k"), "go"), (str(tmp_path / "u"), "go")):
        done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "k" / "w.npy"), np.load(tmp_path / "u" / "w.npy"))


def test_reseed_model_sets_dropout_state():
    m = build()
    assert reseed_model(m, 11) == 1
    x = np.ones((4, 8), dtype="float32")
    a = m(x, training=True).numpy()
    reseed_model(m, 11)
    b = m(x, training=True).numpy()
    reseed_model(m, 12)
    c = m(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cpu_has_default_strategy_and_float32():
    assert distribution_strategy().num_replicas_in_sync == 1
    assert precision_for_devices() == "float32"
    with pytest.raises(ValueError, match=r"`all_reduce` must be 'hierarchical' or 'nccl'"):
        distribution_strategy(devices=["/cpu:0", "/cpu:1"], all_reduce="ring")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    """The two-replica path (Kaggle T4 x2) on two logical CPU devices: gradients averaged over
    replicas of a 32-sample global batch give the weights one device gets (no dropout here)."""
    script = tmp_path / "mirror.py"
    script.write_text(
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        # tf.data's shuffle is rewritten when the strategy distributes the dataset, so the
        # order is fixed here with numpy: what is compared is the gradient aggregation.
        + TINY.replace("keras.layers.Dropout(0.5), ", "").replace(
            ".shuffle(256, seed=epoch)", "").replace(
            "from_tensor_slices((X, y))", "from_tensor_slices(tuple(a[np.random.default_rng(epoch).permutation(256)] for a in (X, y)))")
        + textwrap.dedent(
            """
            import sys
            from brain_audit.train import distribution_strategy, fit_resumable
            s = distribution_strategy(devices=[d.name for d in tf.config.list_logical_devices('CPU')])
            assert s.num_replicas_in_sync == 2, s
            m2, _ = fit_resumable(build, data, sys.argv[1] + "/two", 2, seed=0, strategy=s, verbose=0)
            m1, _ = fit_resumable(build, data, sys.argv[1] + "/one", 2, seed=0, verbose=0)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(m1.get_weights(), m2.get_weights()))
            moved = max(float(np.abs(a).max()) for a in m1.get_weights())
            print("replicas", s.num_replicas_in_sync, "maxdiff", diff, "moved", moved)
            """
        )
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas 2" in done.stdout
    maxdiff = float(done.stdout.split("maxdiff")[1].split()[0])
    assert maxdiff < 1e-4, done.stdout
