"""python -m analysis dashboard RUN [--port N]

The live view of a run: optuna-dashboard (history, intermediate values, parallel coordinates, slice
and contour plots, importance, trial comparison) on the run's Optuna database, every trial of its
search and confirmation (`studies.engine.record` writes it), while the study runs and after. It binds
127.0.0.1 on a free port (`--port N` to choose) and prints the URL; Ctrl-C stops it. optuna-dashboard
is an extra: `pip install -e ".[dashboard]"`. Bad input: one line, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HINT = 'optuna-dashboard is not installed: pip install -e ".[dashboard]"'
FILE = "optuna.db"  # studies.engine.record.FILE: what a run writes by default


class DashboardError(Exception):
    """Bad input, or no dashboard to start: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise DashboardError(message)


def storage_url(run: str | Path) -> str:
    """The Optuna storage of a run folder: the `--optuna-storage` it ran with (its manifest), else its own
    `optuna.db`. A DashboardError where the folder is no run or holds no database."""
    run = Path(run)
    if not run.is_dir():
        raise DashboardError(f"{run} is not a folder: pass a run folder such as results/lr_scan/quick")
    try:
        manifest = json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    given = ((manifest.get("argv") or {}) if isinstance(manifest, dict) else {}).get("optuna_storage")
    if given:
        return given
    if not (run / FILE).is_file():
        raise DashboardError(
            f"{run} holds no {FILE}: pass the folder of a run (results/STUDY/NAME) that this version of the "
            "studies ran, while it runs or after"
        )
    return f"sqlite:///{(run / FILE).resolve()}"


def server(url: str, port: int = 0, host: str = "127.0.0.1"):
    """optuna-dashboard's WSGI app on `url`, served by wsgiref at host:port (0: a free port, which the
    OS picks as it binds). Returns the server (`serve_forever`, `shutdown`); its port is
    `server.server_port`. A DashboardError where optuna-dashboard is missing or the port is taken."""
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise DashboardError(HINT) from None
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # no line per request
            pass

    class Threaded(WSGIServer):
        daemon_threads = True

        def process_request(self, request, client_address):  # a slow request never blocks the others
            import threading

            threading.Thread(target=self._handle, args=(request, client_address), daemon=True).start()

        def _handle(self, request, client_address):
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    except Exception as e:
        raise DashboardError(f"cannot open the Optuna storage {url} ({type(e).__name__})") from None
    try:
        return make_server(host, port, wsgi(storage), server_class=Threaded, handler_class=Quiet)
    except OSError as e:
        raise DashboardError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None


def main(argv: list[str] | None = None, out=None) -> int:
    out = out or sys.stdout
    p = _Parser(prog="python -m analysis dashboard", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("run", metavar="RUN", help="a run folder (results/lr_scan/quick), running or finished")
    p.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    try:
        a = p.parse_args(argv)
        if not 0 <= a.port < 65536:
            raise DashboardError(f"--port {a.port}: expected 1 to 65535 (or 0 for a free port)")
        httpd = server(storage_url(a.run), a.port)
    except DashboardError as e:
        print(f"python -m analysis dashboard: error: {e}", file=sys.stderr)
        return 2
    print(f"optuna-dashboard on {a.run}: http://127.0.0.1:{httpd.server_port}/ (Ctrl-C stops it)", file=out, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
