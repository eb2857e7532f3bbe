"""Study declarations, the command line and the search algorithm (no Ray run here)."""

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from studies import STUDIES
from studies.engine.config import OPTIMIZERS, full_config
from studies.engine.plan import plan
from studies.engine.runner import UsageError
from studies.engine.search import GridSearch
from studies.engine.study import BUDGETS
from studies.engine.task import resolve_task

DEFAULTS = full_config({})  # every default: the loop's and the built-in tasks'

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", STUDIES)
def test_declaration_is_short_and_complete(name):
    mod = importlib.import_module(f"studies.{name}")
    s = mod.STUDY
    assert s.name == name and f"python -m studies.{name}" in mod.__doc__
    assert set(s.budgets) == set(BUDGETS)
    assert len(inspect.getsource(mod).splitlines()) < 100
    keys = set(full_config({}, resolve_task(s.fixed.get("task", "image"))))  # the loop's and the study's task's
    for b in s.budgets.values():
        for point in b.grid or s.grid:
            assert set(point) <= keys, point  # one name per hyperparameter: config keys
            assert {**s.fixed, **b.fixed, **point}.get("optimizer", "adam") in OPTIMIZERS
        assert set(s.fixed) | set(b.fixed) <= keys
    assert set(s.search) <= keys


def test_plan_resolves_budget_seeds_and_dataset(tmp_path):
    from studies.lr_scan import STUDY

    p = plan(STUDY, ["--budget", "quick", "--seeds", "3", "--storage", str(tmp_path), "--name", "x"])
    assert p.seeds == [0, 1, 2] and len(p.points) == 6 and p.fixed["dataset"] == "fashion_mnist"
    assert plan(STUDY, ["--seeds", "2", "--first-seed", "3", "--storage", str(tmp_path)]).seeds == [3, 4]
    assert p.run_dir == f"{tmp_path}/lr_scan/x" and p.gpus == 0.0 and p.cpus == 1.0
    full = plan(STUDY, ["--budget", "full", "--gpus-per-trial", "0"])
    assert full.fixed["dataset"] == "cifar10" and full.budget.iterations == 100


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--budget", "huge"], "invalid choice: 'huge'"),
        (["--gpus-per-trial", "-1"], "must be 0 or more"),
        (["--gpus-per-trial", "1"], "no GPU is visible"),
        (["--cpus-per-trial", "0"], "must be positive"),
        (["--seeds", "0"], "must be positive"),
        (["--seeds", "two"], "is not a number"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--num-samples", "3"], "no nuisance search"),
        (["--name", "../up"], "plain folder name"),
    ],
)
def test_bad_flags_are_usage_errors(argv, match):
    from studies.lr_scan import STUDY

    with pytest.raises(UsageError, match=match):
        plan(STUDY, argv)


@pytest.mark.parametrize(
    "argv", [["--budget", "huge"], ["--gpus-per-trial", "-1"], ["--dataset", "nope"], ["--max-seeds", "2"]]
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, argv):
    out = subprocess.run(
        [sys.executable, "-m", "studies.lr_scan", *argv, "--storage", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m studies.lr_scan: error:"), out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "r").exists()


def test_help_lists_the_shared_flags():
    out = subprocess.run(
        [sys.executable, "-m", "studies.palindrome", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for flag in (
        "--budget",
        "--num-samples",
        "--seeds",
        "--max-concurrent",
        "--cpus-per-trial",
        "--gpus-per-trial",
        "--address",
        "--storage",
        "--name",
        "--dataset",
        "--data-dir",
        "--resume",
    ):
        assert flag in out.stdout


def test_quick_falls_back_to_digits_when_fashion_mnist_is_missing(tmp_path, monkeypatch):
    import datasets.images as images
    from studies.engine.checks import UsageError, prepare_data
    from studies.lr_scan import STUDY

    class Offline:
        def __init__(self, *a, **k):
            raise OSError("no network")

    import torchvision

    monkeypatch.setattr(images, "FASHION_SYSTEM_DIRS", (tmp_path / "nowhere",))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    argv = ["--storage", str(tmp_path / "r"), "--data-dir", str(tmp_path / "data")]
    p = plan(STUDY, argv)
    notice = prepare_data(p)
    assert p.fixed["dataset"] == "digits" and "\n" not in notice
    assert "apt-get install dataset-fashion-mnist" in notice and "inconclusive" in notice
    with pytest.raises(UsageError, match="Fashion-MNIST"):  # named by the user: no fallback
        prepare_data(plan(STUDY, [*argv, "--dataset", "fashion_mnist"]))
    assert not (tmp_path / "r").exists()


def test_grid_search_gives_each_point_one_trial_with_every_seed_then_finishes():
    s = GridSearch([{"lr": 1}, {"lr": 2}], seeds=[0, 1, 2], fixed={"model": "cnn"}, metric="acc", mode="max")
    configs = [s.suggest(str(i)) for i in range(2)]
    assert s.total == 2  # one trial per configuration; it trains seeds 0, 1, 2 (ASHA can never split them)
    assert [(c["lr"], c["seeds"]) for c in configs] == [(1, [0, 1, 2]), (2, [0, 1, 2])]
    assert all(c["model"] == "cnn" and "seed" not in c for c in configs)
    assert s.suggest("2") == GridSearch.FINISHED


def test_grid_search_tunes_nuisance_per_point_and_tells_optuna_the_seed_mean():
    from optuna.trial import TrialState
    from ray import tune

    s = GridSearch(
        [{"optimizer": "adam"}, {"optimizer": "sgd"}],
        seeds=[0, 1],
        fixed={"iterations": 4},
        metric="acc",
        mode="max",
        space={"lr": tune.loguniform(1e-5, 1e-1)},
        samples=3,
        first={"lr": 1e-4},
    )
    assert s.total == 6
    configs = {str(i): s.suggest(str(i)) for i in range(6)}
    assert s.suggest("x") == GridSearch.FINISHED
    by_opt = {o: [c for c in configs.values() if c["optimizer"] == o] for o in ("adam", "sgd")}
    for cs in by_opt.values():
        assert len(cs) == 3 and len({c["lr"] for c in cs}) == 3 and all(c["seeds"] == [0, 1] for c in cs)
        assert all(1e-5 <= c["lr"] <= 1e-1 for c in cs) and cs[0]["lr"] == 1e-4  # the hand-run lr first
    # trial "0" ran to the end (iteration 4 of 4): Optuna gets its mean over the seeds as the value;
    # trial "2" was stopped by ASHA at iteration 2: Optuna is told it was pruned, with its intermediate value
    s.on_trial_result("0", {"acc": 0.3, "training_iteration": 4})
    s.on_trial_complete("0", {"acc": 0.3, "training_iteration": 4})
    s.on_trial_result("2", {"acc": 0.1, "training_iteration": 2})
    s.on_trial_complete("2", {"acc": 0.1, "training_iteration": 2})
    study = s.studies[0]
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states[configs["0"]["lr"]] == TrialState.COMPLETE and states[configs["2"]["lr"]] == TrialState.PRUNED
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].value == pytest.approx(0.3)
    pruned = next(t for t in study.trials if t.state == TrialState.PRUNED)
    assert pruned.intermediate_values == {2: pytest.approx(0.1)}


def test_grid_search_state_survives_save_and_restore(tmp_path):
    s = GridSearch([{"lr": 1}, {"lr": 2}], seeds=[0], fixed={}, metric="acc", mode="max")
    s.suggest("a")
    s.save(str(tmp_path / "s.pkl"))
    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(tmp_path / "s.pkl"))
    assert t.suggest("b")["lr"] == 2 and t.suggest("c") == GridSearch.FINISHED


def saved_experiment(exp: Path, search: GridSearch, trials: list[tuple[str, dict, str]], counter: int) -> None:
    """The three files of a Tune experiment that the searcher's restore reads, as Tune names them."""
    import cloudpickle

    exp.mkdir(exist_ok=True)
    search.save(str(exp / "searcher-state-s1.pkl"))
    data = [
        [json.dumps({"trial_id": t, "config": c, "status": st}), json.dumps({"last_result": r})]
        for t, c, st, r in trials
    ]
    (exp / "experiment_state-s1.json").write_text(json.dumps({"trial_data": data}))
    gen = {"counter": counter, "total_samples": search.total, "finished": False, "experiment": None}
    (exp / "search_gen_state-s1.json").write_bytes(cloudpickle.dumps(gen))


def restored(exp: Path) -> tuple[GridSearch, dict]:
    import cloudpickle

    t = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    t.restore(str(exp / "searcher-state-s1.pkl"))
    return t, cloudpickle.loads((exp / "search_gen_state-s1.json").read_bytes())


def two_points_tuned() -> GridSearch:
    """Two scientific values, lr tuned by Optuna with 2 samples each: 4 trials."""
    from ray import tune

    return GridSearch([{"opt": "a"}, {"opt": "b"}], [0], {}, "acc", "max", {"lr": tune.loguniform(1e-4, 1e-1)}, 2)


def test_a_trial_the_searcher_gave_but_tune_never_saved_is_given_again(tmp_path):

    from studies.engine.search import repair

    s = two_points_tuned()
    configs = {t: s.suggest(t) for t in "wxyz"}  # Tune saved its trial list after w, x, y: z is lost
    s.on_trial_complete("w", {"acc": 0.5, "training_iteration": 4})
    saved = [(t, configs[t], "TERMINATED" if t == "w" else "RUNNING", {}) for t in "wxy"]
    saved_experiment(tmp_path, s, saved, counter=4)
    repair(str(tmp_path))
    t, gen = restored(tmp_path)
    assert gen["counter"] == 3 and not gen["finished"] and gen["total_samples"] >= 4
    again = t.suggest("z2")
    assert again == configs["z"] and t.suggest("q") == GridSearch.FINISHED  # the same point and Optuna trial
    assert sum(len(st.trials) for st in t.studies) == 4  # no Optuna trial asked twice


def test_a_trial_tune_saved_that_the_searcher_never_saw_takes_the_next_point_and_is_told(tmp_path):
    from optuna.trial import TrialState

    from studies.engine.search import repair

    s = two_points_tuned()
    configs = {t: s.suggest(t) for t in "wxy"}
    s.save(str(tmp_path / "older.pkl"))  # the searcher's file before z: the disk refused the newer one
    configs["z"] = s.suggest("z")
    older = GridSearch([{"lr": 9}], seeds=[5], fixed={}, metric="acc", mode="max")
    older.restore(str(tmp_path / "older.pkl"))
    saved = [(t, configs[t], "RUNNING", {}) for t in "wxy"] + [
        ("z", configs["z"], "TERMINATED", {"acc": 0.7, "training_iteration": 4})
    ]
    saved_experiment(tmp_path, older, saved, counter=3)
    repair(str(tmp_path))
    t, gen = restored(tmp_path)
    assert gen["counter"] == 4 and gen["finished"] and t.suggest("q") == GridSearch.FINISHED  # no point twice
    [told] = [tr for tr in t.studies[1].trials if tr.state == TrialState.COMPLETE]
    assert told.value == pytest.approx(0.7) and told.params["lr"] == pytest.approx(configs["z"]["lr"])
    assert set(t.live) == {"w", "x", "y"}


def test_precision_flag_reaches_the_config(tmp_path):
    from studies.lr_scan import STUDY

    assert "precision" not in plan(STUDY, ["--storage", str(tmp_path)]).fixed  # the trainable's default: auto
    assert plan(STUDY, ["--precision", "bf16", "--storage", str(tmp_path)]).fixed["precision"] == "bf16"


def test_autocast_is_bf16_on_a_gpu_and_on_the_cpu_only_when_asked():
    import torch

    from studies.engine.loop import autocast_for

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_for(cpu, "auto") is autocast_for(cpu, "fp32") is autocast_for(cuda, "fp32")
    with autocast_for(cpu, "bf16")():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast_for(cpu, "auto")():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert autocast_for(cuda, "auto") is not autocast_for(cuda, "fp32")


def test_adam_and_sgd_use_the_fused_kernel_where_torch_has_one():
    import torch

    model = torch.nn.Linear(3, 2)
    for name, opt_cls in (("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        opt = OPTIMIZERS[name](model.parameters(), DEFAULTS)
        try:
            opt_cls([torch.zeros(1, requires_grad=True)], lr=0.1, fused=True)
            fused = True
        except RuntimeError:  # this torch has no fused kernel for the CPU
            fused = False
        assert bool(opt.defaults.get("fused")) is fused, name
        assert len(opt.param_groups[0]["params"]) == 2  # every parameter, not an emptied iterator


def test_a_crashed_trial_that_will_be_retried_has_its_results_synced_first():
    from types import SimpleNamespace

    from studies.engine.search import GroupedASHA

    asha = GroupedASHA(time_attr="training_iteration", metric="val_acc", mode="max", max_t=4, grace_period=1)
    calls = []
    controller = SimpleNamespace(checkpoint=lambda **kw: calls.append(kw))
    for recover in (True, False):
        trial = SimpleNamespace(trial_id=f"t{recover}", config={}, should_recover=lambda r=recover: r)
        asha.on_trial_add(controller, trial)
        asha.on_trial_error(controller, trial)
    assert calls == [{"force": True, "wait": True}]  # the retried one only: a stopped trial keeps its file


def test_large_runs_need_yes_and_no_budget_is_one(tmp_path):
    from studies.engine.plan import LARGE_ITERATIONS, LARGE_RUNS
    from studies.lr_scan import STUDY

    argv = ["--storage", str(tmp_path)]
    with pytest.raises(UsageError, match="2,400 seed runs, more than 2,000: pass --yes"):
        plan(STUDY, [*argv, "--seeds", "400"])  # 6 lrs x 400 seeds
    p = plan(STUDY, [*argv, "--seeds", "400", "--yes"])
    assert len(p.seeds) == 400 and p.n_trials == 6
    assert plan(STUDY, [*argv, "--iterations", "20000", "--yes"]).budget.iterations == 20000
    for name in STUDIES:  # every budget as declared runs without --yes
        s = importlib.import_module(f"studies.{name}").STUDY
        for budget in BUDGETS:
            p = plan(s, [*argv, "--budget", budget, "--gpus-per-trial", "0"])
            assert p.n_trials * len(p.seeds) <= LARGE_RUNS and p.budget.iterations <= LARGE_ITERATIONS


def test_storage_file_uri_is_a_local_path_and_the_name_defaults_to_the_budget(tmp_path):
    from studies.lr_scan import STUDY

    p = plan(STUDY, ["--budget", "smoke", "--storage", f"file://{tmp_path}"])
    assert p.run_dir == f"{tmp_path}/lr_scan/smoke" and p.log_path == f"{tmp_path}/lr_scan/smoke/ray.log"
