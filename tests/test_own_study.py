"""A study of one's own, outside the package: the example in examples/signals (a 1-D CNN of the
user's, a task of the user's, its own hyperparameter, a nuisance lr and two claims) copied to a
folder outside the repository and run at smoke by path and by module name; a plain trainable of the
user's; and a broken analysis module, which fails before Ray starts or, if only the real tables
break it, after training with the tables kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "signals"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def studies_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studies", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def user_repo(tmp_path) -> Path:
    """The example in a git repository of its own, outside this one."""
    repo = tmp_path / "my_research"
    shutil.copytree(EXAMPLE, repo / "signals", ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("-c", "user.name=u", "-c", "user.email=u@example.org", "commit", "-qm", "signals", cwd=repo)
    return repo


def reproduce_line(report: Path) -> str:
    lines = report.read_text().split("## Reproduce\n\n```\n", 1)[1].split("\n")
    return lines[0]


@pytest.mark.slow
def test_the_example_runs_from_a_folder_outside_the_repository(user_repo):
    out = studies_cli("signals/signals_study.py", "--budget", "smoke", "--storage", "results", cwd=user_repo)
    assert out.returncode == 0, out.stderr[-2000:]
    run = user_repo / "results" / "signals" / "smoke"
    both = pd.read_parquet(run / "trials.parquet")
    trials = both[both["phase"] == "search"]
    assert len(trials) == 4 and sorted(trials["config.kernel"].unique()) == [3, 9]  # 2 kernels x 2 Optuna lrs
    confirm = both[both["phase"] == "confirm"]  # each kernel at its tuned lr again, on a fresh seed
    assert sorted(confirm["config.kernel"]) == [3, 9] and set(confirm["config.seed"]) == {1}
    assert (trials["config.task"] == "signals").all() and (trials["status"] == "completed").all()
    assert 1e-3 in trials["config.lr"].round(12).tolist()  # search_first: the lr Optuna tries first
    assert trials["metric.test_acc"].between(0, 1).all() and trials["metric.val_loss"].notna().all()
    assert set(trials.filter(like="metric.test_acc_").columns) == {f"metric.test_acc_{k}" for k in range(3)}
    claims = pd.read_csv(run / "claims.csv")
    assert claims["claim"].str.startswith(("Both kernel sizes learn", "A wider kernel")).tolist() == [True, True]
    assert (claims["verdict"] == "inconclusive").all()  # no decision on fewer than 3 seeds a side
    assert claims["why"].str.contains("fewer than 3 seeds a side").all()
    report = (run / "report.md").read_text()
    assert "## Claims" in report and "Both kernel sizes learn the task" in report
    assert (run / "figures" / "accuracy_vs_kernel.png").is_file()

    m = json.loads((run / "manifest.json").read_text())
    assert m["command"] == "python -m studies signals/signals_study.py --budget smoke --storage results"
    assert m["module"]["name"] == "signals_study" and m["analysis"] == {
        "module": "signals_analysis",
        "root": str(user_repo / "signals"),
    }
    assert m["git"]["study"] == {
        "root": str(user_repo),
        "commit": git("rev-parse", "HEAD", cwd=user_repo),
        "dirty": True,
    }  # results/ is untracked
    assert m["git"]["studies"]["root"] == str(ROOT) and m["git_commit"] == m["git"]["studies"]["commit"]
    line = reproduce_line(run / "report.md")
    assert line == f"cd {user_repo} && {m['command']}"

    # the reproduce command works as printed (the same name again: Tune restores the finished run)
    again = subprocess.run(["bash", "-c", line], cwd="/", env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(pd.read_parquet(run / "trials.parquet")) == len(both)  # every trial once, both phases
    # and python -m analysis finds the analysis module again from the manifest, from anywhere
    shutil.rmtree(run / "figures")
    (run / "claims.csv").unlink()
    rendered = subprocess.run(
        [sys.executable, "-m", "analysis", str(run)], cwd="/", env=ENV, capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    assert len(pd.read_csv(run / "claims.csv")) == 2 and (run / "figures" / "accuracy_vs_kernel.png").is_file()


@pytest.mark.slow
def test_the_example_runs_by_module_name(user_repo, tmp_path):
    folder = user_repo / "signals"
    out = studies_cli(
        "signals_study",
        "--budget",
        "smoke",
        "--seeds",
        "2",
        "--num-samples",
        "1",
        "--storage",
        str(tmp_path / "res"),
        cwd=folder,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "res" / "signals" / "smoke"
    trials = pd.read_parquet(run / "trials.parquet").query("phase == 'search'")
    assert len(trials) == 4 and sorted(trials["config.seed"]) == [0, 0, 1, 1]  # 2 kernels x 1 lr x 2 seeds
    assert trials.groupby("trial")["config.kernel"].nunique().eq(1).all()  # a trial trains both seeds of a kernel
    m = json.loads((run / "manifest.json").read_text())
    assert (
        m["command"] == f"python -m studies signals_study --budget smoke --seeds 2 --num-samples 1 --storage "
        f"{tmp_path / 'res'}"
    )
    assert m["module"]["root"] == str(folder) and len(pd.read_csv(run / "claims.csv")) == 2


def write_module(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


TRAINABLE = '''
    """A study with a trainable of its own, Ray Tune style: the metrics are a known function of the config."""
    from studies import Budget, Study, cross, report_seeds

    def train(config):
        for it in range(1, config["iterations"] + 1):
            report_seeds({s: {"val_acc": config["x"] * it / 10 + s / 100, "test_acc": config["x"] / 2,
                              "train_loss": 1.0 / it} for s in config["seeds"]}, step=it)

    STUDY = Study(name="own_trainable", doc=__doc__, grid=cross(x=[1.0, 2.0]), fixed={}, trainable=train,
                  analysis=__name__, budgets={"smoke": Budget(iterations=3, seeds=2)})
    CLAIMS = []
'''


@pytest.mark.slow
def test_a_plain_trainable_reports_per_seed_metrics_that_the_tables_read(tmp_path):
    write_module(tmp_path / "proj", "own_trainable", TRAINABLE)
    out = studies_cli(
        "own_trainable.py", "--budget", "smoke", "--storage", str(tmp_path / "res"), cwd=tmp_path / "proj"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "res" / "own_trainable" / "smoke"
    trials = pd.read_parquet(run / "trials.parquet").sort_values(["config.x", "config.seed"])
    assert trials["config.x"].tolist() == [1.0, 1.0, 2.0, 2.0] and trials["config.seed"].tolist() == [0, 1, 0, 1]
    assert trials["metric.val_acc"].round(6).tolist() == [0.3, 0.31, 0.6, 0.61]  # x * 3 / 10 + seed / 100
    assert trials["best.val_acc"].round(6).tolist() == [0.3, 0.31, 0.6, 0.61]
    assert trials["metric.test_acc"].tolist() == [0.5, 0.5, 1.0, 1.0] and (trials["iterations"] == 3).all()
    curves = pd.read_parquet(run / "curves.parquet")
    assert sorted(curves.loc[curves["trial_id"] == trials["trial_id"].iloc[1], "metric.train_loss"].round(6)) == [
        round(1 / 3, 6),
        0.5,
        1.0,
    ]
    assert json.loads((run / "manifest.json").read_text())["analysis"]["module"] == "own_trainable"


STUDY_WITH = """
    from ray import tune
    from studies import Budget, Study, cross
    STUDY = Study(name="broken", doc="", grid=cross(lr=[1e-3]), fixed=dict(task="image", model="mlp", hidden=(8,)),
                  analysis="broken_analysis", budgets={{"smoke": Budget(iterations=1, fixed=dict(n_train=64))}})
"""


@pytest.mark.parametrize(
    "analysis, expected",
    [
        (
            "import no_such_package\nCLAIMS = []\n",
            "cannot import the analysis module broken_analysis (from {folder}): ModuleNotFoundError",
        ),
        (
            "from analysis.verdicts import Claim\nCLAIMS = [Claim('x', 'y', lambda t, c, m: undefined_name)]\n",
            "the claims of broken_analysis fail on a run's (empty) tables: NameError",
        ),
    ],
)
def test_a_broken_analysis_module_fails_before_ray_starts(tmp_path, analysis, expected):
    folder = tmp_path / "proj"
    write_module(folder, "broken", STUDY_WITH.format())
    (folder / "broken_analysis.py").write_text(analysis)
    out = studies_cli("broken.py", "--budget", "smoke", "--storage", str(tmp_path / "res"), cwd=folder, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"python -m studies broken.py: error: {expected.format(folder=folder)}"), out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_an_analysis_that_fails_on_the_real_tables_keeps_them_and_says_how_to_go_on(tmp_path):
    folder = tmp_path / "proj"
    write_module(folder, "broken", STUDY_WITH.format())
    broken = "CLAIMS = []\ndef figures(trials, curves, manifest):\n    return {'x': trials['config.lr'].iloc[0].nope}\n"
    (folder / "broken_analysis.py").write_text(broken)
    out = studies_cli("broken.py", "--budget", "smoke", "--storage", str(tmp_path / "res"), cwd=folder)
    run = tmp_path / "res" / "broken" / "smoke"
    assert out.returncode == 1, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line == (
        f"python -m studies broken.py: error: rendering the report failed (AttributeError: "
        f"'numpy.float64' object has no attribute 'nope'); the tables are safe in {run} (trials.parquet, "
        f"curves.parquet): fix the analysis module, then run python -m analysis {run}"
    ), line
    assert "Traceback" not in out.stderr and len(pd.read_parquet(run / "trials.parquet")) == 1
    (folder / "broken_analysis.py").write_text("CLAIMS = []\ndef figures(t, c, m):\n    return {}\n")
    again = subprocess.run(
        [sys.executable, "-m", "analysis", str(run)], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert (run / "report.md").is_file()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--grid", "kernel=4"],
            "kernel=4: expected an odd whole number >= 1 (signals); fix the value or the --grid flag",
        ),
        (["--grid", "kernel=3,5"], None),
    ],
)
def test_the_users_own_hyperparameters_are_checked_before_ray_starts(tmp_path, flags, expected):
    folder = tmp_path / "proj" / "signals"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(folder))
    try:
        from studies.engine.plan import plan
        from studies.engine.runner import UsageError
        from studies.engine.source import load_study

        study, source = load_study(str(folder / "signals_study.py"))
        args = ["--budget", "smoke", "--storage", str(tmp_path / "res"), *flags]
        if expected is None:
            p = plan(study, args, source)
            assert [pt["kernel"] for pt in p.points] == [3, 5] and p.task.name == "signals"
            assert p.fixed["task"] == "signals" and p.task.defaults["channels"] == 16
            return
        with pytest.raises(UsageError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
            plan(study, args, source)
    finally:
        sys.path.remove(str(folder))
        for name in ("signals_study", "signals_analysis"):
            sys.modules.pop(name, None)


def test_a_study_module_that_is_not_there_or_defines_no_study_says_so(tmp_path):
    write_module(tmp_path, "empty", "X = 1\n")
    for ref, expected in (
        ("nope.py", "nope.py: no such file"),
        ("empty.py", "empty.py: defines no STUDY"),
        ("no_such_module", "no_such_module: no module 'no_such_module' here"),
    ):
        out = studies_cli(ref, cwd=tmp_path, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith(f"python -m studies: error: {expected}"), out.stderr
        assert out.stderr.count("\n") == 1


def test_a_users_code_reaches_the_workers():
    from studies.engine.cluster import PACKAGES, runtime_env
    from studies.engine.cluster import ROOT as PROJECT
    from studies.engine.source import Source

    own = Source("signals_study", "/home/u/research/signals", "/home/u/research/signals/signals_study.py")
    local = runtime_env(None, own)["env_vars"]["PYTHONPATH"].split(os.pathsep)
    assert local[:2] == [str(PROJECT), own.root]  # ours first: our `datasets` wins over Hugging Face's
    cluster = runtime_env("10.0.0.1:6379", own)
    assert cluster["working_dir"] == own.root
    assert cluster["py_modules"] == [str(PROJECT / p) for p in PACKAGES] and ".git" in cluster["excludes"]
    catalogue = runtime_env("10.0.0.1:6379", Source("studies.lr_scan", str(PROJECT)))
    assert catalogue["working_dir"] == str(PROJECT) and "py_modules" not in catalogue
