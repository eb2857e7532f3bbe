"""`python -m analysis dashboard RUN`: optuna-dashboard on a run's Optuna database, on 127.0.0.1 and a
free port, its URL printed; without optuna-dashboard one line says how to get it. A real database
(written by the searcher) and a real server, read back through the dashboard's JSON API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from analysis import dashboard
from studies.engine.record import Record
from studies.engine.search import GridSearch

ROOT = Path(__file__).resolve().parent.parent


def a_run(folder: Path) -> Path:
    """A run folder whose database holds a grid of two lrs: one trial done, one running."""
    run = folder / "lr_scan" / "smoke"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"study": "lr_scan", "argv": {"optuna_storage": None}}))
    grid = [{"lr": 1e-3}, {"lr": 1e-2}]
    s = GridSearch(grid, [0], {"iterations": 2}, "acc", "max", record=Record(f"sqlite:///{run}/optuna.db", "r", grid))
    s.suggest("a"), s.suggest("b")
    for it in (1, 2):
        s.on_trial_result("a", {"acc": 0.4 * it, "training_iteration": it})
    s.on_trial_complete("a", {"acc": 0.8, "training_iteration": 2})
    s.on_trial_result("b", {"acc": 0.3, "training_iteration": 1})
    return run


def get(url: str):
    return json.loads(urllib.request.urlopen(url, timeout=30).read())


def test_the_dashboard_serves_the_runs_studies_on_loopback_while_a_trial_runs(tmp_path):
    pytest.importorskip("optuna_dashboard", reason='optuna-dashboard is not installed (pip install -e ".[dashboard]")')
    run = a_run(tmp_path)
    assert dashboard.storage_url(run) == f"sqlite:///{run.resolve()}/optuna.db"
    httpd = dashboard.server(dashboard.storage_url(run))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert httpd.server_address[0] == "127.0.0.1" and httpd.server_port > 0
        base = f"http://127.0.0.1:{httpd.server_port}/api/studies"
        studies = {s["study_name"]: s["study_id"] for s in get(base)["study_summaries"]}
        assert set(studies) == {"r lr=0.001", "r lr=0.01"}
        [done] = get(f"{base}/{studies['r lr=0.001']}?after=0")["trials"]
        assert done["state"] == "Complete" and done["values"] == [0.8]
        assert [iv["value"] for iv in done["intermediate_values"]] == [0.4, 0.8]
        [running] = get(f"{base}/{studies['r lr=0.01']}?after=0")["trials"]
        assert running["state"] == "Running" and [iv["value"] for iv in running["intermediate_values"]] == [0.3]
        with pytest.raises(dashboard.DashboardError, match=f"--port {httpd.server_port}: cannot listen"):
            dashboard.server(dashboard.storage_url(run), httpd.server_port)  # taken: one line
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_command_prints_the_url_and_serves_until_stopped(tmp_path):
    pytest.importorskip("optuna_dashboard", reason='optuna-dashboard is not installed (pip install -e ".[dashboard]")')
    run = a_run(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "analysis", "dashboard", str(run), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"optuna-dashboard on {run}: http://127.0.0.1:{port}/ "), (line, proc.stderr.read())
        assert len(get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["dashboard", "/nonexistent/run"], "is not a folder"),
        (["dashboard", "{tmp}"], "holds no optuna.db"),
        (["dashboard", "{run}", "--port", "70000"], "--port 70000: expected 1 to 65535"),
        (["dashboard"], "the following arguments are required: RUN"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, words):
    from analysis.__main__ import main

    run = a_run(tmp_path)
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m analysis dashboard: error: ") and words in err


def test_without_optuna_dashboard_one_line_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as where it is not installed
    assert dashboard.main([str(a_run(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m analysis dashboard: error: {dashboard.HINT}\n"
    assert dashboard.HINT == 'optuna-dashboard is not installed: pip install -e ".[dashboard]"'
