"""Running on an existing Ray cluster (`--address`): where the results may go.

Every node writes its trials' results and checkpoints under Tune's storage_path, and the driver
reads them back, so on a cluster of several machines `--storage` must be one storage that all of
them see: a URI (s3://, gs://) or a network filesystem mounted at the same path everywhere. A
plain local folder is fine only when every node of the cluster runs on this machine.
"""

from __future__ import annotations

import ipaddress
import os
import socket

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
