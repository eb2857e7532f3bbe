"""`datasets` is also Hugging Face's top-level package: ours must be the one imported, in the
driver and in Ray's workers, even when a namesake comes first on the path."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import os, ray
import datasets as early                      # the namesake, imported before ours is known
assert not hasattr(early, 'IS_STUDIES_DATASETS')
import studies
from studies.engine.cluster import loopback_only, ray_init_kwargs
import datasets
assert datasets.IS_STUDIES_DATASETS, datasets.__file__
loopback_only()
kw = ray_init_kwargs(); kw.pop('log_to_driver')
ray.init(num_cpus=1, log_to_driver=False, **kw)

@ray.remote
def worker_datasets():
    import datasets
    return datasets.__file__, getattr(datasets, 'IS_STUDIES_DATASETS', False)

print('driver', datasets.__file__)
print('worker', *ray.get(worker_datasets.remote()))
ray.shutdown()
"""


def test_our_datasets_wins_in_driver_and_workers(tmp_path):
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("HUGGING_FACE = True\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "site"),
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("driver", "worker")))
    ours = str(ROOT / "datasets" / "__init__.py")
    assert lines["driver"] == ours
    assert lines["worker"] == f"{ours} True"
