"""Running on a Ray cluster: the launcher configs against Ray's own schema, the shared-storage
rule of `--address`, and (slow) a smoke study on a real two-node Ray cluster with token
authentication, both nodes on this machine (loopback addresses 127.0.0.2 and 127.0.0.3)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import analysis
from studies.engine.cluster import network_fs, storage_problem

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]


def prepared(name: str) -> dict:
    """The config as `ray up` checks it: defaults of its provider filled in, then Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / name).read_text()))
    validate_config(config)
    return config


@pytest.mark.parametrize("name", CONFIGS)
def test_cluster_config_passes_rays_schema(name):
    import ray

    c = prepared(name)
    head = " ".join(c["head_start_ray_commands"])
    worker = " ".join(c["worker_start_ray_commands"])
    assert "ray start --head --port=6379 --autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=127.0.0.1" in head  # the dashboard is reached through `ray dashboard` (SSH)
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert c["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the one token, on every node
    assert (ROOT / c["file_mounts"]["~/studies"]).resolve() == ROOT  # `ray up` runs from the repository root
    setup = " ".join(c["setup_commands"])
    assert "cd ~/studies && pip install -e ." in setup
    assert f'"ray[default]=={ray.__version__}"' in setup  # the nodes run the Ray that launched them


def test_aws_cluster_has_gpu_workers():
    c = prepared("cluster.yaml")
    assert c["provider"]["type"] == "aws"
    workers = [t for name, t in c["available_node_types"].items() if name != c["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert c["available_node_types"][c["head_node_type"]]["resources"]["CPU"] == 0  # trials run on the GPUs


def test_onprem_cluster_lists_its_machines():
    c = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())["provider"]
    assert c["type"] == "local" and c["head_ip"] and c["worker_ips"]


def test_schema_rejects_a_misspelled_key():
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = (ROOT / "cluster.yaml").read_text().replace("\nsetup_commands:", "\nsetup_comands:", 1)

    with pytest.raises(ValidationError, match="setup_comands"):
        validate_config(prepare_config(yaml.safe_load(text)))


def node(ip, alive=True):
    return {"NodeManagerAddress": ip, "Alive": alive}


def test_storage_on_a_cluster(tmp_path):
    here = {"10.0.0.5"}
    local, elsewhere = [node("127.0.0.2"), node("10.0.0.5")], [node("10.0.0.5"), node("10.0.0.6")]
    assert storage_problem(str(tmp_path), local, here) is None  # every node on this machine
    assert storage_problem("s3://bucket/results", elsewhere, here) is None
    assert storage_problem(str(tmp_path), [*local, node("10.0.0.9", alive=False)], here) is None  # dead: ignored
    msg = storage_problem(str(tmp_path), elsewhere, here)
    assert "10.0.0.6" in msg and "10.0.0.5" not in msg and "s3://bucket/results" in msg and "\n" not in msg


def test_network_filesystem_is_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\nnfs:/export /mnt/shared nfs4 rw 0 0\ntmpfs /mnt/shared/tmp tmpfs rw 0 0\n"
    )
    assert network_fs("/mnt/shared/results/x", str(mounts)) == "nfs4"
    assert network_fs("/mnt/shared", str(mounts)) == "nfs4"
    assert network_fs("/mnt/shared/tmp/results", str(mounts)) is None  # the deepest mount point decides
    assert network_fs("/mnt/sharedother", str(mounts)) is None
    assert network_fs("/home/me/results", str(mounts)) is None


def test_the_project_travels_once(monkeypatch):
    from studies.engine.cluster import runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert runtime_env("auto")["working_dir"] == str(ROOT)
    assert "working_dir" not in runtime_env(None)
    # a `ray job submit --working-dir .` driver: the job already ships it, and Ray refuses a second working_dir
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}}')
    assert "working_dir" not in runtime_env("auto")


def test_address_with_a_local_folder_on_a_multi_machine_cluster_is_refused(tmp_path, monkeypatch, capsys):
    import ray

    import studies.engine.checks
    from studies.palindrome import main

    monkeypatch.setattr(studies.engine.checks, "address_problem", lambda address: None)  # a Ray head "answers" there
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: None)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})  # schedulable: the storage check decides
    monkeypatch.setattr(ray, "nodes", lambda: [node("127.0.0.1"), node("192.0.2.7")])  # TEST-NET: not here
    assert main(["--budget", "smoke", "--address", "192.0.2.7:6379", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "192.0.2.7" in err and "s3://bucket/results" in err
    assert not (tmp_path / "palindrome" / "smoke" / "manifest.json").exists()


# Before Ray starts: is there a Ray at --address, can --storage (a URI) be written?


def serve(reply: bytes | None):
    """A server on a free loopback port that answers each connection with `reply` (None: closes at
    once); returns the port and a function that stops it."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                if reply is not None:
                    conn.recv(64)
                    conn.sendall(reply)

    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1], server.close


def test_probe_tells_a_ray_head_from_a_port_that_is_not_one():
    from studies.engine.cluster import probe

    settings = bytes([0, 0, 6, 4, 0, 0, 0, 0, 0]) + bytes(6)  # what a gRPC server sends first: a SETTINGS frame
    for reply, expected in (
        (settings, None),
        (None, "it closed the connection"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not speak gRPC"),
    ):
        port, stop = serve(reply)
        try:
            problem = probe("127.0.0.1", port, timeout=2)
        finally:
            stop()
        assert problem is None if expected is None else expected in problem and "not a Ray head" in problem
    port = free_port("127.0.0.1")  # nothing listens there now
    assert "nothing answers at 127.0.0.1" in probe("127.0.0.1", port, timeout=2)


def test_ray_client_address_needs_ray_client(monkeypatch):
    import importlib.util

    from studies.engine.cluster import address_problem

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    msg = address_problem("ray://127.0.0.1:10001")
    assert 'pip install "ray[client]==' in msg and "grpcio is missing" in msg and "\n" not in msg


def test_auto_address_uses_rays_own_lookup(monkeypatch):
    from studies.engine.cluster import address_problem

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # where Ray looks first for `auto`
    msg = address_problem("auto", timeout=2)
    assert msg.startswith("--address auto (") and ":1)" in msg and "nothing answers" in msg


def test_storage_uri_is_written_once_and_refused_when_unknown_or_silent(monkeypatch):
    import threading

    import studies.engine.cluster as cluster

    assert cluster.uri_problem("mock:///bucket/results") is None  # pyarrow's in-memory filesystem: written, deleted
    assert "not a storage that pyarrow knows" in cluster.uri_problem("s3x://bucket/results")
    release = threading.Event()
    monkeypatch.setattr(cluster, "_uri_write_test", lambda uri: release.wait(30) and None)  # no network: it hangs
    try:
        t0 = time.time()
        msg = cluster.uri_problem("gs://bucket/results", timeout=0.3)
        assert time.time() - t0 < 5
    finally:
        release.set()
    assert msg == (
        "--storage gs://bucket/results: no answer within 0.3 s: check the network, the credentials and "
        "the bucket name, or use a local path"
    )


@pytest.mark.slow
def test_probe_finds_a_real_ray_head(ray_session):
    from studies.engine.cluster import address_problem

    gcs = ray_session.get_runtime_context().gcs_address  # token authentication on: the probe needs no token
    assert address_problem(gcs) is None


# A real cluster: two `ray start` nodes on loopback addresses, token authentication on.


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group; returns once the node is up."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    proc = subprocess.Popen(
        [ray, "start", *args, "--block"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM makes `ray start --block` stop the processes of its node; then its group is killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session), whatever is left
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


# Run by a driver on the cluster: where each node imports the project from.
WHERE = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from studies.engine.cluster import runtime_env

ray.init(address=sys.argv[1], runtime_env=runtime_env(sys.argv[1]), logging_level="WARNING")

@ray.remote(num_cpus=1)
def where():
    import studies
    return ray.util.get_node_ip_address(), studies.__file__

on = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in ray.nodes() if n["Alive"]]
for ip, path in ray.get([where.options(scheduling_strategy=s).remote() for s in on]):
    print(ip, path)
"""


@pytest.mark.slow
def test_smoke_study_on_a_two_node_cluster(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        HOME=str(home), RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1", RAY_USAGE_STATS_ENABLED="0"
    )
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    assert (home / ".ray" / "auth_token").is_file()  # what `ray up` copies to every node
    port = free_port("127.0.0.2")
    address = f"127.0.0.2:{port}"
    # a free port rather than Ray's fixed default (52365), so that another Ray on the same loopback
    # address does not break this one
    agent = {ip: ["--dashboard-agent-listen-port", str(free_port(ip))] for ip in ("127.0.0.2", "127.0.0.3")}
    nodes = []
    try:
        started = time.time()
        nodes.append(
            start_node(
                [
                    "--head",
                    "--node-ip-address",
                    "127.0.0.2",
                    "--port",
                    str(port),
                    "--num-cpus",
                    "1",
                    "--num-gpus",
                    "0",
                    "--include-dashboard=false",
                    "--temp-dir",
                    str(home / "ray"),
                    *agent["127.0.0.2"],
                ],
                env,
                tmp_path / "head.log",
            )
        )
        # each node its own temp dir, as on separate machines: a node deletes from its temp dir the shipped
        # project once it no longer uses it, even while another node sharing that dir still runs from it
        nodes.append(
            start_node(
                [
                    "--address",
                    address,
                    "--node-ip-address",
                    "127.0.0.3",
                    "--num-cpus",
                    "1",
                    "--num-gpus",
                    "0",
                    "--temp-dir",
                    str(home / "rayw"),
                    *agent["127.0.0.3"],
                ],
                env,
                tmp_path / "worker.log",
            )
        )
        print(f"two nodes up in {time.time() - started:.0f} s")
        storage = tmp_path / "results"
        started = time.time()
        flags = ["--budget", "smoke", "--seeds", "2", "--address", address, "--storage", str(storage)]

        def study(*args: str, cwd: Path) -> None:
            out = subprocess.run(
                [sys.executable, "-m", *args, *flags], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
            )
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

        study("studies.palindrome", cwd=ROOT)
        print(f"study in {time.time() - started:.0f} s")
        # a study of one's own, from a folder outside the project: its folder travels as the working_dir and
        # the project's packages as py_modules, and the workers import both
        own = tmp_path / "elsewhere" / "signals"
        shutil.copytree(ROOT / "examples" / "signals", own, ignore=shutil.ignore_patterns("__pycache__"))
        study("studies", "signals_study.py", "--num-samples", "2", cwd=own)  # 2 lrs: a choice, so a confirmation
        # the project travels to every node as the runtime_env's working_dir (not the installed copy)
        found = subprocess.run(
            [sys.executable, "-c", WHERE, address], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
        )
        assert found.returncode == 0, found.stderr[-3000:]
        where = dict(line.split() for line in found.stdout.splitlines())
        assert set(where) == {"127.0.0.2", "127.0.0.3"}, found.stdout
        for path in where.values():
            assert path.startswith(str(home)) and "working_dir_files" in path, path
        # without the token, the cluster refuses a driver
        bad = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='{address}')"],
            env={**env, "RAY_AUTH_TOKEN": "not-the-token"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "auth" in bad.stderr.lower(), bad.stderr[-2000:]
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        shutil.rmtree(home, ignore_errors=True)
    t = analysis.load(storage / "palindrome" / "smoke").trials
    assert len(t) == 8 and t["trial_id"].is_unique  # 2 cells x 2 lengths x 2 seeds
    assert set(t["status"]) <= {"completed", "stopped"}
    assert set(t["node"]) == {"127.0.0.2", "127.0.0.3"}  # trials ran on both nodes
    both = analysis.load(storage / "signals" / "smoke").trials
    own, confirm = both[both["phase"] == "search"], both[both["phase"] == "confirm"]
    assert len(own) == 8 and set(both["status"]) <= {"completed", "stopped"}  # 2 kernels x 2 lrs x 2 seeds
    assert len(confirm) == 4 and set(confirm["config.seed"]) == {2, 3}  # each kernel's lr again, fresh seeds
    assert set(own["node"]) <= {"127.0.0.2", "127.0.0.3"}  # the workers imported the user's task and model
