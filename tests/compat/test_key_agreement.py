"""Key agreement keys through boto3 and the AWS CLI: the secret kmsgate's
DeriveSharedSecret returns equals the one the Python `cryptography` package
derives from the peer's private key and kmsgate's public key (ECDH)."""

from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from test_cli import aws_json

CURVES = {"ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1, "ECC_NIST_P521": ec.SECP521R1}


def spki(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.boto3
@pytest.mark.parametrize("spec", sorted(CURVES))
def test_shared_secret_matches_cryptography(kms, spec):
    key = kms.create_key(KeySpec=spec, KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    assert key["KeyAgreementAlgorithms"] == ["ECDH"]
    ours = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    peer = ec.generate_private_key(CURVES[spec]())
    out = kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=spki(peer))
    assert out["SharedSecret"] == peer.exchange(ec.ECDH(), ours)
    assert out["KeyId"] == key["Arn"]
    assert out["KeyOrigin"] == "AWS_KMS"
    # A peer key on another curve is refused.
    other = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ClientError) as e:
        kms.derive_shared_secret(KeyId=key["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=spki(other))
    assert e.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.cli
def test_cli_derives_the_same_secret(kms, gateway, tmp_path):
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    ours = load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    peer = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "peer.der"
    public.write_bytes(spki(peer))
    out = aws_json(
        gateway,
        "kms", "derive-shared-secret",
        "--key-id", key,
        "--key-agreement-algorithm", "ECDH",
        "--public-key", f"fileb://{public}",
    )  # fmt: skip
    assert base64.b64decode(out["SharedSecret"]) == peer.exchange(ec.ECDH(), ours)
