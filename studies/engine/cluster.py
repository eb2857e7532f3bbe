"""The Ray that a study runs on: a local one started here, or an existing cluster (`--address`).

- what Ray's workers need to import this project (`runtime_env`), and how Ray is started or
  joined (`ray_init_kwargs`; `loopback_only` keeps a local Ray off the machine's external address);
- whether a GPU is visible here (`cuda_available`), and whether a trial's CPUs and GPUs fit the
  Ray at all (`unschedulable`);
- where the results may go on a cluster (`storage_problem`). Every node writes its trials'
  results and checkpoints under Tune's storage_path, and the driver reads them back, so on a
  cluster of several machines `--storage` must be one storage that all of them see: a URI
  (s3://, gs://) or a network filesystem mounted at the same path everywhere. A plain local
  folder is fine only when every node of the cluster runs on this machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project: studies/, models/, datasets/, analysis/
PACKAGES = ("studies", "models", "datasets", "analysis")
EXCLUDES = [".git", ".venv", "results", "data", ".gpu", "**/__pycache__", "*.parquet"]

# Filesystem types (as in /proc/mounts) that several machines can mount: a folder on one of them
# may be shared by all nodes of a cluster.
NETWORK_FS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.juicefs",
    "fuse.mountpoint-s3",
)


def this_host() -> set[str]:
    """The IP addresses this machine's name resolves to."""
    try:
        return set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        return set()


def is_this_host(ip: str, here: set[str]) -> bool:
    try:
        loopback = ipaddress.ip_address(ip).is_loopback  # 127.0.0.0/8, ::1
    except ValueError:
        loopback = False
    return loopback or ip in here


def network_fs(path: str, mounts: str = "/proc/mounts") -> str | None:
    """The network filesystem type (nfs4, lustre, ...) that `path` lies on, or None."""
    path = os.path.realpath(os.path.expanduser(path))
    try:
        with open(mounts) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, fstype = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype if fstype in NETWORK_FS else None


def storage_problem(storage: str, nodes: list[dict], here: set[str] | None = None) -> str | None:
    """Why `--storage` cannot hold a run on the cluster of `nodes` (as `ray.nodes()` lists them), or
    None. A URI, a network filesystem, or a local folder with every node on this machine is fine."""
    if "://" in storage:
        return None
    here = this_host() if here is None else here
    ips = sorted({n["NodeManagerAddress"] for n in nodes if n.get("Alive", True)})
    elsewhere = [ip for ip in ips if not is_this_host(ip, here)]
    if not elsewhere or network_fs(storage):
        return None
    return (
        f"--storage {storage} is a folder on this machine, but the Ray cluster has nodes elsewhere "
        f"({', '.join(elsewhere[:3])}{', ...' if len(elsewhere) > 3 else ''}) that write there too: "
        "use a shared path (NFS) mounted on every node, or a URI such as s3://bucket/results"
    )


def cuda_available() -> bool:
    """Whether torch sees a GPU on this machine."""
    import torch

    return torch.cuda.is_available()


def runtime_env(address: str | None = None, source=None) -> dict:
    """What Ray's workers need to import this project and the study's own module (`source`, a
    `studies.engine.source.Source`): on this machine, both folders on the path, ours first, so that our
    `datasets` wins over Hugging Face's. On a cluster the code travels: the project as working_dir; for
    a study that lives elsewhere, the study's folder as working_dir and the project's packages as
    py_modules (both go first on the workers' path)."""
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    external = source is not None and source.external
    if address is None:
        paths = [str(ROOT), *([source.root] if external else []), *filter(None, [os.environ.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return {"env_vars": env}
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")  # set for `ray job submit` drivers
    if (job.get("runtime_env") or {}).get("working_dir"):  # the job ships the code (Ray refuses a second one)
        return {"env_vars": env}
    if external:
        return {
            "working_dir": source.root,
            "py_modules": [str(ROOT / p) for p in PACKAGES],
            "env_vars": env,
            "excludes": EXCLUDES,
        }
    return {"working_dir": str(ROOT), "env_vars": env, "excludes": EXCLUDES}


def loopback_only() -> None:
    """Make the Ray started next (and its processes) bind to 127.0.0.1 only, not the machine's
    external address. Ray reads the switch at import, so it is set in the module too."""
    from ray._private import ray_constants

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False")


def ray_init_kwargs(address: str | None = None, source=None) -> dict:
    """`ray.init` arguments: start a local Ray without a dashboard, or join the cluster at `address`."""
    kwargs = {"runtime_env": runtime_env(address, source), "log_to_driver": True, "logging_level": "WARNING"}
    if address is None:
        kwargs["include_dashboard"] = False
    else:
        kwargs["address"] = address
    return kwargs


def unschedulable(cpus: float, gpus: float, address: str | None, resources: dict) -> str | None:
    """Why no trial needing `cpus` and `gpus` could ever start on the Ray of `resources` (as
    `ray.cluster_resources()` gives them), or None: refuse at once rather than hang."""
    for kind, need in (("CPU", cpus), ("GPU", gpus)):
        have = resources.get(kind, 0)
        if need > have:
            where = f"the Ray cluster at {address}" if address else "this machine's Ray"
            return f"a trial needs {need:g} {kind} but {where} has {have:g}: lower --{kind.lower()}s-per-trial" + (
                "" if address else " or run on a cluster with --address"
            )
    return None


# ---- checks before Ray starts: is there a Ray at --address, can --storage (a URI) be written? -------------

# The connection preface of an HTTP/2 client and an empty SETTINGS frame: Ray's GCS and its Ray Client
# server speak gRPC, which answers with a SETTINGS frame of its own (frame type 4, the 4th byte).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
PROBE_TIMEOUT_S = 5.0
URI_TIMEOUT_S = 10.0


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def split_address(address: str) -> tuple[str, int]:
    """HOST and PORT of 'HOST:PORT' or 'ray://HOST:PORT'."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host, int(port)


def probe(host: str, port: int, timeout: float = 5.0) -> str | None:
    """Why nothing that speaks Ray's protocol (gRPC over HTTP/2) answers at host:port, or None: a TCP
    connect, then HTTP/2's connection preface, to which a gRPC server replies with a SETTINGS frame."""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        return f"cannot resolve {host} ({e.strerror or e})"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as e:
        return f"nothing answers at {host}:{port} ({e.strerror or _one_line(e)})"
    with s:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return None  # TLS comes first there: the port is open, ray.init says the rest
        reply = b""
        try:
            s.settimeout(timeout)
            s.sendall(_H2_HELLO)
            while len(reply) < 9:
                chunk = s.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            return f"{host}:{port} accepts connections but sent nothing within {timeout:g} s: it is not a Ray head"
        except OSError:  # reset by the other side
            pass
    if len(reply) < 9 or reply[3] != 4:
        how = "closed the connection" if len(reply) == 0 else "does not speak gRPC"
        return f"{host}:{port} accepts connections but is not a Ray head (it {how})"
    return None


def address_problem(address: str, timeout: float | None = None) -> str | None:
    """Why `ray.init(address=address)` cannot work, found without starting Ray, or None: no Ray found
    for `auto`, Ray Client (`ray://`) not installed, or nothing that speaks Ray's protocol at the port."""
    given = address
    if address == "auto":
        try:
            from ray._private import services

            address = services.canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError:
            return (
                "--address auto: no running Ray cluster found on this machine (nor in RAY_ADDRESS): start "
                "one with `ray start --head`, or give --address HOST:PORT of the head"
            )
        except Exception:  # Ray's own lookup changed or failed otherwise: let ray.init say it
            return None
        if not re.fullmatch(r"(ray://)?[\w.\-]+:\d+", address or ""):
            return None
    if address.startswith("ray://"):
        from importlib import metadata
        from importlib.util import find_spec

        missing = [m for m in ("grpc", "ray.util.client") if find_spec(m) is None]
        if missing:
            version = metadata.version("ray")
            return (
                f'--address {given}: Ray Client (ray://) needs `pip install "ray[client]=={version}"` '
                f"({missing[0].replace('grpc', 'grpcio')} is missing), or run the command on the head with "
                "--address auto (ray job submit)"
            )
    host, port = split_address(address)
    problem = probe(host, port, PROBE_TIMEOUT_S if timeout is None else timeout)
    if problem is None:
        return None
    shown = given if given == address else f"{given} ({address})"
    what = (
        "the Ray Client server (`ray start --head` opens it on port 10001)"
        if address.startswith("ray://")
        else "the head's GCS port (`ray start --head --port`, 6379 by default)"
    )
    return f"--address {shown}: {problem}: check that the Ray head is running there and that the port is {what}"


def uri_problem(uri: str, timeout: float | None = None) -> str | None:
    """Why results cannot be written at storage URI `uri`, or None: a scheme pyarrow does not know, or
    a small marker file that cannot be written and deleted there within `timeout` seconds (default
    URI_TIMEOUT_S). The check runs in a thread: a storage without network may retry for minutes."""
    timeout = URI_TIMEOUT_S if timeout is None else timeout
    found: dict[str, str | None] = {}

    def check():
        found["problem"] = _uri_write_test(uri)

    t = threading.Thread(target=check, name="storage-check", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return (
            f"--storage {uri}: no answer within {timeout:g} s: check the network, the credentials and the "
            "bucket name, or use a local path"
        )
    return found.get("problem")


def _uri_write_test(uri: str) -> str | None:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as e:
        return (
            f"--storage {uri}: not a storage that pyarrow knows ({_one_line(e)}): use a path, or a URI "
            "such as s3://bucket/results, gs://bucket/results or hdfs://host/path"
        )
    folder = path.rstrip("/")
    while True:  # object stores need no folders; a filesystem with folders is tried in the deepest one there
        name = f".studies-write-test-{uuid.uuid4().hex[:12]}"
        marker = f"{folder}/{name}" if folder else name
        try:
            with fs.open_output_stream(marker) as f:
                f.write(b"ok")
            fs.delete_file(marker)
            return None
        except FileNotFoundError as e:
            if not folder:
                return f"--storage {uri}: cannot write there ({_one_line(e)}): check that the bucket or path exists"
            folder = folder.rpartition("/")[0]
        except Exception as e:
            return (
                f"--storage {uri}: cannot write there ({_one_line(e)}): check that the bucket exists, the "
                "credentials and the permissions"
            )
