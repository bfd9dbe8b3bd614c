"""boto3 over TLS: a gateway with a [tls] table, a client that trusts the
gateway's CA through ``verify=<ca file>``."""

from __future__ import annotations

import datetime as dt
import ipaddress

import boto3
import pytest
from botocore.exceptions import SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import NO_RETRIES, REGION, launch_gateway, stop_gateway

pytestmark = pytest.mark.boto3


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(d):
    """A CA and a server certificate for 127.0.0.1, as PEM files in d."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("compat test CA"))
        .issuer_name(_name("compat test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kmsgate"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "chain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(_pem_key(key))
    return d / "ca.pem"


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    pki = base / "pki"
    pki.mkdir()
    ca = make_pki(pki)
    gw = launch_gateway(
        base,
        extra_config=(
            f'[tls]\ncert_chain_file = "{pki / "chain.pem"}"\n'
            f'private_key_file = "{pki / "key.pem"}"\n'
        ),
    )
    yield gw, ca
    stop_gateway(gw)


def client(gw, verify):
    return boto3.session.Session(
        aws_access_key_id=gw.access_key_id,
        aws_secret_access_key=gw.secret_access_key,
        region_name=REGION,
    ).client("kms", endpoint_url=gw.endpoint, verify=verify, config=NO_RETRIES)


def test_boto3_over_https_trusting_the_gateway_ca(tls_gateway):
    gw, ca = tls_gateway
    assert gw.endpoint.startswith("https://127.0.0.1:")
    kms = client(gw, str(ca))
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"app": "tls"})
    back = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext={"app": "tls"})
    assert back["Plaintext"] == dk["Plaintext"]


def test_boto3_refuses_the_gateway_without_its_ca(tls_gateway):
    gw, _ = tls_gateway
    # The system's CA bundle does not know the test CA.
    with pytest.raises(SSLError):
        client(gw, True).list_keys()
