"""Certificates and keys for a trial deployment: a CA, the SuperLink's TLS certificate, one key pair per site.

`fedmedlora certs OUT --sites 3 --host 127.0.0.1` writes

    ca.crt, ca.key              a self-signed certificate authority (keep ca.key off the SuperLink machine)
    superlink.crt, superlink.key  the SuperLink's TLS certificate (subject alternative names: each --host) and key
    site<k>_key, site<k>_key.pub  ECDSA P-384 key pairs in OpenSSH format, the format `flower-supernode
                                --auth-supernode-private-key` and `flwr supernode register` read

with the `cryptography` package Flower itself depends on. The SuperNodes and the `flwr` CLI trust ca.crt
(`--root-certificates`); the SuperLink serves superlink.crt. For production a consortium uses certificates from
its own PKI and lets each site generate its own key (only the .pub file leaves the site).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "superlink.crt", "superlink.key"


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_name(host: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_tls(out: Path, hosts: list[str], days: int = 365) -> dict[str, Path]:
    """A CA and a SuperLink certificate valid for `hosts` (IP addresses or DNS names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (x509.CertificateBuilder().subject_name(_name("fedmedlora trial CA")).issuer_name(_name("fedmedlora trial CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([_alternative_name(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": out / CA_FILE, "ca-key": out / "ca.key", "cert": out / CERT_FILE, "key": out / KEY_FILE}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["ca-key"].write_bytes(_pem_key(ca_key))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(_pem_key(key))
    for secret in (files["ca-key"], files["key"]):
        secret.chmod(0o600)
    return files


def write_site_key(out: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in OpenSSH format: (private key, public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / f"{name}_key", out / f"{name}_key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return private, public


def write_trial_credentials(out: Path, hosts: list[str], sites: int) -> dict[str, Path]:
    files = write_tls(out, hosts)
    for k in range(sites):
        files[f"site{k}"], files[f"site{k}.pub"] = write_site_key(out, f"site{k}")
    return files
