"""The shape of the code: a study is its declaration plus its analysis module, found by file name;
the analysis package fans out in layers; modules stay short; the report opens with the claims
table, which `analysis.claims(run)` returns and the cross-run index counts. Synthetic tables only."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis import MANIFEST, OPT_MANIFEST, manifest, synthetic_lr_scan, synthetic_optimizer, write_run

import analysis
import studies
from analysis.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, Claim, Sample, Verdict, greater

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 410  # lines as `ruff format` writes them
# Each module of analysis/ imports only from lower layers: helpers are never borrowed sideways.
LAYERS = {
    "modules": 0,
    "style": 0,
    "selection": 0,
    "data": 0.5,
    "files": 0,
    "dashboard": 0,
    "importance": 1,
    "verdicts": 1,
    "sequential": 1.5,
    "draw": 1,
    "plots": 2,
    "curves": 2,
    "findings": 3,
    "report": 3,
    "index": 3,
    "__init__": 4,
    "__main__": 5,
}
STUDY_LAYER = 2.5  # studies/NAME_analysis.py: above the plots, below findings and report


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


# ---- studies: two halves each ------------------------------------------------------------------


@pytest.mark.parametrize("name", studies.STUDIES)
def test_every_study_has_a_declaration_and_an_analysis_module(name):
    assert (ROOT / "studies" / f"{name}.py").is_file() and (ROOT / "studies" / f"{name}_analysis.py").is_file()
    assert importlib.import_module(f"studies.{name}").STUDY.name == name
    mod = studies.analysis_module(name)
    assert mod.__name__ == f"studies.{name}_analysis"
    assert isinstance(mod.HEADLINE, str) and mod.HEADLINE in mod.CAPTIONS
    assert isinstance(mod.REFERENCE, str) and mod.REFERENCE
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in mod.CAPTIONS.items())
    assert callable(mod.figures) and callable(mod.findings) and isinstance(mod.CLAIMS, list)


def test_studies_are_found_by_file_name(tmp_path):
    for f in ("a.py", "a_analysis.py", "b.py", "c_analysis.py", "z.py", "z_analysis.py"):
        (tmp_path / f).write_text("raise RuntimeError('never imported')\n")
    assert studies._discover(tmp_path) == ("a", "z")  # b has no analysis module, c no declaration
    assert set(studies.STUDIES) >= {"lr_scan", "optimizer_comparison", "palindrome", "regularization"}
    assert list(studies.STUDIES) == sorted(studies.STUDIES)
    assert studies.analysis_module("no_such_study") is None


# ---- modules ------------------------------------------------------------------------------------


def test_no_module_is_long_and_io_is_gone():
    paths = [*ROOT.glob("analysis/*.py"), *ROOT.glob("studies/*.py"), *ROOT.glob("studies/engine/*.py")]
    assert any(p.parent.name == "engine" for p in paths)  # the engine's modules are measured too
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
    assert not (ROOT / "analysis" / "io.py").exists() and not (ROOT / "analysis" / "figures.py").exists()


def _analysis_imports(path: Path) -> set[str]:
    """The analysis modules that `path` imports (`from analysis import x`, `from analysis.x import ...`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "analysis":
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("analysis."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("analysis.")}
    return out & set(LAYERS)


def _imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Every module that `path` imports statically, anywhere in it: `import a.b` gives a.b, `from a.b
    import c` gives a.b and a.b.c (c may be a module), and a relative import the absolute names in
    `package` (default: the package that holds `path` in this project)."""
    if package is None:
        package = ".".join(path.resolve().relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from `package`, up level - 1 packages
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def test_imported_modules_sees_every_form_of_import(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text(
        "import studies.engine.loop\nfrom studies import lr_scan\ndef g():\n    from . import style\n"
        "    from studies.lr_scan_analysis import CLAIMS\n    import os\n"
    )
    got = _imported_modules(f, package="analysis")
    assert got == {
        "studies.engine.loop",
        "studies",
        "studies.lr_scan",
        "analysis",
        "analysis.style",
        "studies.lr_scan_analysis",
        "studies.lr_scan_analysis.CLAIMS",
        "os",
    }


def test_no_import_cycle_between_the_engine_the_catalogue_and_analysis():
    """analysis/ never imports `studies` (it finds a run's analysis module by the name its manifest
    records), and the engine never imports a catalogue study or its analysis module."""
    for p in ROOT.glob("analysis/*.py"):
        bad = {m for m in _imported_modules(p) if m == "studies" or m.startswith("studies.")}
        assert not bad, f"analysis/{p.name} imports {bad}"
    catalogue = {f"studies.{n}" for n in studies.STUDIES} | {f"studies.{n}_analysis" for n in studies.STUDIES}
    assert "studies.lr_scan" in catalogue and "studies.lr_scan_analysis" in catalogue
    engine = list(ROOT.glob("studies/engine/*.py"))
    assert len(engine) > 5
    for p in engine:
        bad = {m for m in _imported_modules(p) if any(m == c or m.startswith(c + ".") for c in catalogue)}
        assert not bad, f"studies/engine/{p.name} imports the catalogue: {bad}"


def test_analysis_fans_out_in_layers():
    assert {p.stem for p in ROOT.glob("analysis/*.py")} <= set(LAYERS), "a new module needs a layer"
    for p in ROOT.glob("analysis/*.py"):
        up = {m for m in _analysis_imports(p) if LAYERS[m] >= LAYERS[p.stem] and m != p.stem}
        assert not up, f"analysis/{p.name} imports {up} from its own layer or above"
    for p in ROOT.glob("studies/*_analysis.py"):
        up = {m for m in _analysis_imports(p) if LAYERS[m] >= STUDY_LAYER}
        assert not up, f"studies/{p.name} imports {up}: a study module uses style, data, verdicts, plots, curves"


def test_files_reads_the_umask_without_changing_it_at_import():
    from analysis import files

    assert not hasattr(files, "UMASK")
    mask = os.umask(0o027)
    os.umask(mask)
    assert files.umask() == mask


# ---- what a study declares, analysis reads from the manifest -----------------------------------


def test_the_fixed_lr_and_the_class_names_come_from_the_manifest():
    from analysis.findings import findings
    from studies.optimizer_comparison_analysis import fixed_lr

    trials, curves = synthetic_optimizer()
    names = [f"class{k}" for k in range(10)]
    m = {**OPT_MANIFEST, "search_first": {"lr": 1e-3}, "classes": names}
    assert fixed_lr(m) == 1e-3
    figs = analysis.figures(trials, curves, m)
    assert "lr = 1e-3 for all" in " ".join(t.get_text() for t in figs["optimizer_views"].axes[0].get_legend().texts)
    assert [t.get_text() for t in figs["per_class_accuracy"].axes[0].get_xticklabels()] == names
    text = " ".join(findings(trials, curves, m))
    assert "Fixed-lr view (lr = 1e-3 for all" in text and "weakest class0" in text
    assert "optimizer_views" not in analysis.figures(trials, curves, {**OPT_MANIFEST, "search_first": {}})


def test_the_manifest_records_search_first_and_class_names(tmp_path):
    import datasets
    from studies.engine.plan import plan
    from studies.engine.results import manifest as run_manifest
    from studies.optimizer_comparison import STUDY

    p = plan(STUDY, ["--budget", "quick", "--storage", str(tmp_path), "--name", "x"])
    m = run_manifest(p, 0.0, None)
    assert m["search_first"] == {"lr": 1e-4} and m["classes"] == list(datasets.class_names(p.fixed["dataset"]))
    # what `python -m analysis` imports again, and the command that reruns the study
    assert m["analysis"] == {"module": "studies.optimizer_comparison_analysis", "root": str(ROOT)}
    assert m["module"]["name"] == "studies.optimizer_comparison" and m["cwd"] == os.getcwd()
    assert m["command"] == shlex.join(
        ["python", "-m", "studies.optimizer_comparison", "--budget", "quick", "--storage", str(tmp_path), "--name", "x"]
    )
    assert datasets.class_names("cifar10")[:2] == ("airplane", "automobile")
    assert len(datasets.class_names("fashion_mnist")) == 10 and datasets.class_names("palindrome")[9] == "9"


def test_the_study_figures_come_first_then_the_generic_ones_coloured_by_curve_hue():
    from test_analysis import REG_MANIFEST, synthetic_regularization

    trials = synthetic_regularization().assign(stopped_early=False)
    curves = pd.DataFrame(
        [
            {"trial_id": t, "iteration": it, "metric.val_acc": 0.5, "metric.train_loss": 1.0}
            for t in trials["trial_id"]
            for it in (1, 2)
        ]
    )
    figs = analysis.figures(trials, curves, REG_MANIFEST)
    assert list(figs) == ["gap_vs_strength", "hparam_axes", "curves_all_trials"]
    labels = {t.get_text() for t in figs["curves_all_trials"].axes[-1].get_legend().texts}
    assert {"none", "dropout p=0.5", "L2 λ=0.01"} <= labels


# ---- claims -------------------------------------------------------------------------------------


def _claims():
    beats = Claim(
        "lr 1e-3 beats lr 1e-2",
        "hand-run report, 1 run",
        lambda t, c, m: greater(
            Sample("lr 1e-3", np.array([0.90, 0.91, 0.92])), Sample("lr 1e-2", np.array([0.70, 0.71, 0.72]))
        ),
    )
    fixed = Claim(
        "a fixed verdict",
        "made up",
        lambda t, c, m: Verdict(INCONCLUSIVE, "0.5 (1 seed)", "rule two", "one seed never decides"),
    )
    return [beats, fixed]


def test_the_report_opens_with_the_claims_table(tmp_path, monkeypatch):
    monkeypatch.setattr(studies.analysis_module("lr_scan"), "CLAIMS", _claims())
    run = write_run(tmp_path / "lr_scan" / "quick", *synthetic_lr_scan(), MANIFEST)
    out = analysis.render(run)
    assert out["claims"] == {REPRODUCED: 1, CONTRADICTED: 0, INCONCLUSIVE: 1}
    lines = out["report"].read_text().splitlines()
    assert lines[0] == "# lr_scan: synthetic" and [l for l in lines if l.startswith("## ")][0] == "## Claims"
    table = lines[lines.index("## Claims") + 2 :]
    assert table[0] == "| claim | reference | this run | effect [95% CI] | p | seeds | verdict |"
    assert table[2].startswith(
        "| lr 1e-3 beats lr 1e-2 | hand-run report, 1 run [docs/references.md#lr_scan] | lr 1e-3 0.910 ± 0.025 "
        "(95% CI, n=3) vs lr 1e-2 0.710 ± 0.025 (95% CI, n=3) | +0.200 [+0.187, +0.213] | 0.05 | 3 vs 3 |"
    ) and table[2].endswith("| reproduced |")
    assert table[3].endswith("| inconclusive: one seed never decides |")
    rules = [l for l in lines if l.startswith("Rule: ")]
    assert len(rules) == 2 and rules[1] == "Rule: rule two" and "Mann-Whitney" in rules[0]
    assert lines.index(rules[-1]) < lines.index("## Findings")
    html = out["html"].read_text()
    assert html.index("<h2>Claims</h2>") < html.index("<h2>Findings</h2>")

    df = analysis.claims(run)
    assert list(df.columns) == ["claim", "reference", "value", "verdict", "rule", "why", "effect", "p", "seeds", "look"]
    assert df["verdict"].tolist() == [REPRODUCED, INCONCLUSIVE] and df["why"].iloc[1] == "one seed never decides"
    pd.testing.assert_frame_equal(analysis.claims(analysis.load(run)), df)
    pd.testing.assert_frame_equal(pd.read_parquet(run / "claims.parquet"), df)
    assert pd.read_csv(run / "claims.csv").shape == df.shape
    assert not list(run.glob(".*.tmp"))


def test_a_study_without_claims_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(studies.analysis_module("lr_scan"), "CLAIMS", [])
    run = write_run(tmp_path, *synthetic_lr_scan(), manifest("lr_scan", ["lr"]))
    text = analysis.render(run)["report"].read_text()
    section = text.split("## Claims\n\n", 1)[1].split("\n\n## ", 1)[0]
    assert section.strip().count("\n") == 0 and "no claims" in section
    assert analysis.claims(run).empty and list(analysis.claims(run).columns)[:4] == [
        "claim",
        "reference",
        "value",
        "verdict",
    ]


def test_the_index_card_shows_the_verdict_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(studies.analysis_module("lr_scan"), "CLAIMS", _claims())
    monkeypatch.setattr(studies.analysis_module("optimizer_comparison"), "CLAIMS", [])
    write_run(tmp_path / "lr_scan" / "quick", *synthetic_lr_scan(), MANIFEST)
    write_run(tmp_path / "optimizer_comparison" / "quick", *synthetic_optimizer(), OPT_MANIFEST)
    done = analysis.render_all([tmp_path])
    page = (tmp_path / "index.html").read_text()
    cards = page.split("class='card'")[1:]
    assert "claims: 1 reproduced, 0 contradicted, 1 inconclusive" in cards[0]
    assert "claims: none declared" in cards[1]
    assert [e["claims"][REPRODUCED] for e in done["runs"].values()] == [1, 0]


# Where an analysis module takes an extreme itself: each a description or a validation choice, never a
# configuration chosen on test (that goes through analysis.selection, which refuses a test metric).
EXTREMES = {
    "batch_size_analysis.py": "np.argmin(np.abs(lrs",  # the grid index of an lr the selection rule chose
    "language_model_analysis.py": '["metric.val_ppl"].idxmin()',  # each seed's best validation epoch
    "lr_scan_analysis.py": '["metric.gap.mean"].idxmax()',  # the largest gap, described
    "palindrome_analysis.py": "np.argmin(acc)",  # the lowest accuracy over T, described
    "regularization_analysis.py": '["metric.gap.mean"].idxmin()',  # the smallest gap, described
    "toy_mlp_analysis.py": "model(d.test_x).argmax(-1)",  # a model's predicted class
}


def test_configurations_are_chosen_only_by_the_selection_rule():
    pattern = re.compile(r"idxmax|idxmin|nlargest|nsmallest|argmax|argmin|sort_values\([^)]*\)\.(iloc\[0\]|head\(1\))")
    paths = [*ROOT.glob("analysis/*.py"), *ROOT.glob("studies/*_analysis.py"), *ROOT.glob("examples/*/*.py")]
    found = {}
    for p in paths:
        if p.name == "selection.py":
            continue
        for line in p.read_text().splitlines():
            if pattern.search(line) and EXTREMES.get(p.name, "\0") not in line:
                found.setdefault(p.name, []).append(line.strip())
    assert not found, f"choose configurations with analysis.selection (on validation): {found}"
