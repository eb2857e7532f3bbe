"""Shared fixtures: one Ray for the whole session (2 CPUs, no dashboard, loopback), and a tiny
CIFAR-10 in the python pickle batch format, written here (tests never touch the network)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"

import studies  # noqa: E402,F401  (puts the project root first on sys.path)


def write_cifar(root, n_train_per_batch: int = 20, n_test: int = 40, seed: int = 0):
    """CIFAR-10's python version, tiny: 5 train batches and a test batch of random images whose
    class sets the mean brightness of one channel (so a model can learn it)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        data = rng.integers(0, 128, (n, 3, 32, 32), dtype=np.uint8)
        data[:, 0] += (labels * 12).astype(np.uint8)[:, None, None]
        return {"data": data.reshape(n, 3072), "labels": labels.tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train_per_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]},
            f,
        )
    return root


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Tests never touch the network: a dataset download fails as it does offline (a quick budget
    then falls back to digits, as on a machine without Fashion-MNIST)."""
    import torchvision

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("tests never download")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from studies.engine.cluster import loopback_only, ray_init_kwargs

    if not ray.is_initialized():
        loopback_only()
        kwargs = ray_init_kwargs()
        kwargs.pop("log_to_driver", None)
        ray.init(num_cpus=2, log_to_driver=False, **kwargs)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """One thread for torch and NumPy's BLAS, as a trial has: the default of one per core crawls
    while other processes share the cores, and thread pools only wait on small matmuls."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


# ---- real smoke runs that several tests read (each study run once per session) -----------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def optimizer_smoke(tmp_path_factory, ray_session):
    """The default smoke command of optimizer_comparison (a nuisance search, then a confirmation
    phase), run once for the tests that only read such a run: its tables, its Optuna database, the
    dashboard and the report in a browser. The run's folder."""
    from studies.engine.runner import run
    from studies.optimizer_comparison import STUDY

    root = tmp_path_factory.mktemp("optimizer_smoke")
    assert run(STUDY, ["--budget", "smoke", "--storage", str(root)]) == 0
    return root / "optimizer_comparison" / "smoke"


@pytest.fixture(scope="session")
def lr_scan_cli(tmp_path_factory):
    """lr_scan's smoke command in a process of its own, stdout a pipe, as `python -m benchmarks
    validity` runs a first repeat (`--name validity-smoke-1 --first-seed 0`): the completed process
    (its stdout, what a person sees) and the storage root it wrote."""
    import subprocess
    import sys

    storage = tmp_path_factory.mktemp("lr_scan_cli")
    flags = ["--budget", "smoke", "--storage", str(storage), "--name", "validity-smoke-1", "--first-seed", "0"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-m", "studies.lr_scan", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out, storage
