"""What the benches need to run a tailer as deployed: a serving certificate for its HTTPS API port, and the
CPU and memory of its whole process tree (with ``--api-process`` the API runs in a child of its own)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path


def serving_pair(work: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate and key for 127.0.0.1: the API on its own HTTPS port, as deployed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = work / "api.crt", work / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def tree(pid: int) -> list[int]:
    """``pid`` and every live process under it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(child for child, parent in parents.items() if parent == p)
    return found


def _stat_seconds(stat: Path) -> tuple[float, float]:
    """(user + system, system) CPU seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))[0]


def thread_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """Each live thread of a process: (user + system, system) CPU seconds, by thread id (the main
    thread's id is the process's)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = _stat_seconds(task / "stat")
        except OSError:  # (it ended meanwhile)
            continue
    return out


def peak_rss_mb(pid: int) -> float:
    """The peak RSS (VmHWM) of a live process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_sum(pid: int, read: Callable[[int], float]) -> float:
    """``read(p)`` summed over the live processes of the tree under ``pid`` (one that ended meanwhile: 0)."""
    total = 0.0
    for p in tree(pid):
        try:
            total += read(p)
        except OSError:
            continue
    return total


def tree_peak_rss_mb(pid: int) -> float:
    """The sum of each process's peak RSS (VmHWM) over the tree under ``pid``."""
    return tree_sum(pid, peak_rss_mb)


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of the live processes of the tree under ``pid``."""
    return tree_sum(pid, cpu_seconds)
