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
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Filesystem types (as in /proc/mounts) that several machines can mount: a folder on one of them
# may be shared by all nodes of a cluster.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "fuse.glusterfs",
              "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.mountpoint-s3")


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
    return (f"--storage {storage} is a folder on this machine, but the Ray cluster has nodes elsewhere "
            f"({', '.join(elsewhere[:3])}{', ...' if len(elsewhere) > 3 else ''}) that write there too: "
            "use a shared path (NFS) mounted on every node, or a URI such as s3://bucket/results")


def cuda_available() -> bool:
    """Whether torch sees a GPU on this machine."""
    import torch

    return torch.cuda.is_available()


def runtime_env(address: str | None = None) -> dict:
    """What Ray's workers need to import this project: its root first on the path, so that our
    `datasets` wins over Hugging Face's; on a cluster the project itself travels as working_dir."""
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    if address is None:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        return {"env_vars": env}
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")  # set for `ray job submit` drivers
    if (job.get("runtime_env") or {}).get("working_dir"):  # the job ships the project (Ray refuses a second one)
        return {"env_vars": env}
    return {"working_dir": str(ROOT), "env_vars": env,
            "excludes": [".git", ".venv", "results", "data", ".gpu", "**/__pycache__", "*.parquet"]}


def loopback_only() -> None:
    """Make the Ray started next (and its processes) bind to 127.0.0.1 only, not the machine's
    external address. Ray reads the switch at import, so it is set in the module too."""
    from ray._private import ray_constants

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False")


def ray_init_kwargs(address: str | None = None) -> dict:
    """`ray.init` arguments: start a local Ray without a dashboard, or join the cluster at `address`."""
    kwargs = {"runtime_env": runtime_env(address), "log_to_driver": True, "logging_level": "WARNING"}
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
            return (f"a trial needs {need:g} {kind} but {where} has {have:g}: lower --{kind.lower()}s-per-trial"
                    + ("" if address else " or run on a cluster with --address"))
    return None
