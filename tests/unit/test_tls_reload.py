"""ReloadingContext follows a Kubernetes Secret update: ``..data`` swapped to a new timestamped dir."""

from __future__ import annotations

from pathlib import Path

from kube_audit.runtime.tls import ReloadingContext, TLSFiles, client_context
from tests.helpers.pki import issue, make_ca, secret_dir


def _subjects(ctx) -> set[str]:
    """Our test CAs among the context's trusted CAs (the system's are there too)."""
    names = {dict(rdn[0] for rdn in c["subject"]).get("commonName", "") for c in ctx.get_ca_certs()}
    return names & {"ca-1", "ca-2"}


def test_a_symlink_swap_rebuilds_the_context_once(tmp_path: Path) -> None:
    files = {}
    for n in (1, 2):
        d = tmp_path / f"pki{n}"
        d.mkdir()
        ca = make_ca(f"ca-{n}", d / "ca.crt")
        pair = issue(ca, "client", d, server=False)
        files[n] = {"ca.crt": d / "ca.crt", "tls.crt": pair.cert, "tls.key": pair.key}
    secret = tmp_path / "secret"
    secret_dir(secret, "2026_11_25_09_00_00.000000001", files[1])
    rc = ReloadingContext(TLSFiles(str(secret / "ca.crt"), str(secret / "tls.crt"), str(secret / "tls.key")),
                          client_context)
    first = rc.get()
    assert rc.get() is first and _subjects(first) == {"ca-1"}

    secret_dir(secret, "2026_11_25_10_00_00.000000002", files[2])
    second = rc.get()
    assert second is not first and _subjects(second) == {"ca-2"} and rc.reloads == 1
    assert rc.get() is second and rc.reloads == 1
    assert sorted(p.name for p in secret.iterdir()) == ["..2026_11_25_10_00_00.000000002", "..data", "ca.crt",
                                                         "tls.crt", "tls.key"]
