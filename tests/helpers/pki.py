"""Throwaway certificate authorities and certificates, made at test time (no committed keys)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    ca: Path  # CA bundle (PEM) of the main CA
    server: Pair  # localhost, 127.0.0.1, kube-audit-tailer
    client: Pair  # signed by the main CA
    other_ca: Path  # an unrelated CA
    other_client: Pair  # signed by the unrelated CA
    root: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(cn: str, path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, out: Path, *, server: bool,
          names: tuple[str, ...] = ()) -> Pair:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    builder = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = Pair(out / f"{cn}.crt", out / f"{cn}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(root: Path) -> PKI:
    ca = make_ca("kaf-test-ca", root / "ca.crt")
    other = make_ca("kaf-other-ca", root / "other-ca.crt")
    return PKI(
        ca=root / "ca.crt",
        server=issue(ca, "server", root, server=True, names=("localhost", "127.0.0.1", "kube-audit-tailer")),
        client=issue(ca, "client", root, server=False),
        other_ca=root / "other-ca.crt",
        other_client=issue(other, "other-client", root, server=False),
        root=root,
    )


def secret_dir(path: Path, stamp: str, files: dict[str, Path]) -> None:
    """Write a Secret the way the kubelet does: files in a timestamped dir, ``..data`` swapped to it
    atomically (rename of a new symlink), the visible names linking through ``..data``."""
    path.mkdir(exist_ok=True)
    target = path / f"..{stamp}"
    target.mkdir()
    for name, src in files.items():
        shutil.copy(src, target / name)
    tmp_link = path / "..data_tmp"
    tmp_link.symlink_to(target.name)
    old = os.readlink(path / "..data") if (path / "..data").is_symlink() else None
    os.rename(tmp_link, path / "..data")
    for name in files:
        if not (path / name).is_symlink():
            (path / name).symlink_to(f"..data/{name}")
    if old:
        shutil.rmtree(path / old)
