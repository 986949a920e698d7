"""The deployment commands: what they hand to Flower, and the mistakes they catch before Flower starts."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from flwr.common.config import parse_config_args

from fedmedlora.data.files import DataFormatError
from fedmedlora.launch.certs import write_site_key, write_tls
from fedmedlora.launch.deploy import node_config_string, superlink_command, supernode_command, write_connection
from fedmedlora.settings import ConfigError


@pytest.fixture
def site_file(tmp_path):
    path = tmp_path / "site a" / "ward's notes.tsv"  # a space and a quote: the node config must quote them
    path.parent.mkdir()
    path.write_text("Aspirin\tB-Chemical\ncaused\tO\n\nasthma\tB-Disease\n")
    return path


def test_trial_certificates_serve_tls_for_the_named_hosts(tmp_path):
    files = write_tls(tmp_path, ["127.0.0.1", "superlink.example.org"])
    ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
    cert = x509.load_pem_x509_certificate(files["cert"].read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "superlink.example.org" in names.get_values_for_type(x509.DNSName)
    load_pem_private_key(files["key"].read_bytes(), password=None)
    assert files["key"].stat().st_mode & 0o077 == 0  # private keys readable by their owner only
    private, public = write_site_key(tmp_path, "site0")
    load_ssh_private_key(private.read_bytes(), password=None)  # what flower-supernode reads
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")  # what flwr supernode register reads


def test_superlink_command_turns_on_tls_and_supernode_authentication(tmp_path):
    write_tls(tmp_path, ["127.0.0.1"])
    command = superlink_command(port=9300, certs=tmp_path)
    for flag, file in (("--ssl-ca-certfile", "ca.crt"), ("--ssl-certfile", "superlink.crt"),
                       ("--ssl-keyfile", "superlink.key")):
        assert command[command.index(flag) + 1] == str(tmp_path / file)
    assert "--enable-supernode-auth" in command and "--insecure" not in command
    assert "--disable-runtime-dependency-installation" in command
    assert "--insecure" in superlink_command(certs=None, auth=False)
    with pytest.raises(ConfigError, match="authentication needs TLS"):
        superlink_command(certs=None)
    with pytest.raises(ConfigError, match="no ca.crt"):
        superlink_command(certs=tmp_path / "elsewhere")


def test_supernode_command_gives_flower_a_node_config_it_parses(site_file, tmp_path):
    command = supernode_command(superlink="127.0.0.1:9300", data=[str(site_file)], name="ward a",
                                root_certificates=tmp_path / "ca.crt", auth_key=tmp_path / "site0_key",
                                port=9401, cache_dir=tmp_path / "cache")
    node_config = parse_config_args([command[command.index("--node-config") + 1]])
    assert node_config == {"data-path": str(site_file), "site-name": "ward a", "cache-dir": str(tmp_path / "cache")}
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert command[command.index("--auth-supernode-private-key") + 1] == str(tmp_path / "site0_key")
    assert command[command.index("--port") + 1] == "9401"
    pool = supernode_command(superlink="h:1", partition=(1, 3), cache=False, root_certificates=None)
    assert parse_config_args([pool[pool.index("--node-config") + 1]]) == {
        "partition-id": 1, "num-partitions": 3, "cache": False}
    assert "--insecure" in pool
    assert node_config_string({"a": 'x"y', "b": 2.5, "c": True}) == 'a="x\\"y" b=2.5 c=true'


def test_supernode_problems_are_reported_before_flower_starts(site_file, tmp_path):
    with pytest.raises(DataFormatError, match="does not exist"):
        supernode_command(superlink="h:1", data=[str(tmp_path / "missing.tsv")])
    broken = tmp_path / "broken.tsv"
    broken.write_text("Aspirin\tB-Chemical\ncaused\tOUTSIDE\n")
    with pytest.raises(DataFormatError, match=r"broken.tsv:2: tag 'OUTSIDE' is not BIO"):
        supernode_command(superlink="h:1", data=[str(broken)], task="ner")
    with pytest.raises(ConfigError, match="authentication needs TLS"):
        supernode_command(superlink="h:1", data=[str(site_file)], auth_key=tmp_path / "k")
    with pytest.raises(ConfigError, match="needs its data"):
        supernode_command(superlink="h:1")


def test_connections_are_added_to_the_flower_config(tmp_path):
    path = write_connection("consortium", "10.0.0.5:9093", root_certificates=tmp_path / "ca.crt", home=tmp_path)
    write_connection("trial", "127.0.0.1:9093", insecure=True, home=tmp_path)
    config = tomllib.loads(path.read_text())["superlink"]
    assert config["default"] == "consortium"
    assert config["consortium"] == {"address": "10.0.0.5:9093", "root-certificates": str(tmp_path / "ca.crt")}
    assert config["trial"] == {"address": "127.0.0.1:9093", "insecure": True}
    with pytest.raises(ConfigError, match="--root-certificates .* or --insecure"):
        write_connection("x", "h:1", home=tmp_path)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmedlora.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_refuses_a_missing_site_file_and_a_bad_run_config_without_starting_flower(tmp_path):
    out = _cli("supernode", "--superlink", "127.0.0.1:9", "--insecure", "--data", str(tmp_path / "nope.tsv"))
    assert out.returncode == 2 and "nope.tsv' does not exist" in out.stderr
    out = _cli("submit", "nowhere", str(Path(__file__).resolve().parents[1]), "-c", "strategy.nmae=1")
    assert out.returncode == 2 and "unknown key 'strategy.nmae'" in out.stderr
    out = _cli("certs", str(tmp_path / "creds"), "--sites", "2")
    assert out.returncode == 0 and (tmp_path / "creds" / "site1_key.pub").exists()
