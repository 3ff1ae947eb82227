"""A private certificate authority and server certificates, made with the `openssl` CLI.

Used by the secured Kafka listener of the local stack (`KPP_KAFKA_SASL_SSL=1`) and by tests
that need an HTTPS endpoint. Keys are unencrypted PKCS#8 PEM (what Kafka's PEM keystore
reads without a key password) and readable by the owner only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from contracts.errors import KppError


class TlsError(KppError):
    """The openssl CLI is missing or failed."""


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("the openssl command is needed to make the local CA and certificates and was not "
                       "found on PATH (Debian: apt-get install openssl)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def make_ca(directory: Path, name: str = "kpp-local-ca", days: int = 3650) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key). Kept when both files exist."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    if cert.is_file() and key.is_file():
        return cert, key
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(key), "-out", str(cert))
    os.chmod(key, 0o600)
    return cert, key


def make_certificate(directory: Path, name: str, ca: tuple[Path, Path], *, server: bool = True,
                     hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 3650) -> tuple[Path, Path]:
    """A certificate signed by `ca` for `hosts` (server) or a client certificate: (certificate,
    key). Kept when both files exist."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    if cert.is_file() and key.is_file():
        return cert, key
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    os.chmod(key, 0o600)
    if server:
        sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    else:
        ext.write_text("extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", str(days), "-out", str(cert), "-extfile", str(ext))
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)
    return cert, key


def pem_keystore(directory: Path, name: str, cert: Path, key: Path) -> Path:
    """One PEM file with the private key and the certificate: what Kafka reads as
    `ssl.keystore.type=PEM` with `ssl.keystore.location` (no keytool, no JKS)."""
    path = directory / f"{name}.keystore.pem"
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(key.read_text() + cert.read_text())
    return path
