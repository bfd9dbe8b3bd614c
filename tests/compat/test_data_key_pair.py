"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext through boto3
and the AWS CLI, each pair checked independently with the Python
`cryptography` package: the PKCS#8 private key and the SubjectPublicKeyInfo
parse, belong together and are encoded exactly as OpenSSL encodes them, a
signature made with the private key verifies with the public key, and the
sealed private key decrypts (with its encryption context only) to the same
PKCS#8 bytes."""

from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
    load_der_public_key,
)

from conftest import KEY_ARN_PREFIX
from test_cli import aws_json

SPECS = {
    "RSA_2048": 2048,
    "RSA_3072": 3072,
    "RSA_4096": 4096,
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}
CONTEXT = {"purpose": "compat-data-key-pair"}
MESSAGE = b"signed with a data key pair"


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


def check_pair(spec: str, private_der: bytes, public_der: bytes) -> None:
    """Both halves parse, match the spec, belong together, are canonical
    DER as OpenSSL writes it, and sign and verify."""
    private = load_der_private_key(private_der, password=None)
    public = load_der_public_key(public_der)
    assert private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()) == private_der
    assert public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == public_der
    assert (
        private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == public_der
    ), "the halves belong together"
    if spec.startswith("RSA"):
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == SPECS[spec]
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        signature = private.sign(MESSAGE, pss, hashes.SHA256())
        public.verify(signature, MESSAGE, pss, hashes.SHA256())
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == SPECS[spec]
        signature = private.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


@pytest.mark.boto3
@pytest.mark.parametrize("spec", list(SPECS))
def test_every_spec_gives_a_pair_that_cryptography_accepts(kms, key_arn, spec):
    out = kms.generate_data_key_pair(KeyId=key_arn, KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert out["KeyId"] == key_arn
    assert out["KeyPairSpec"] == spec
    assert len(out["KeyMaterialId"]) == 64
    check_pair(spec, out["PrivateKeyPlaintext"], out["PublicKey"])

    opened = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    assert opened["Plaintext"] == out["PrivateKeyPlaintext"]
    assert opened["KeyId"] == key_arn
    with pytest.raises(kms.exceptions.InvalidCiphertextException) as e:
        kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])
    assert error_of(e)[1] in (None, "")


@pytest.mark.boto3
def test_without_plaintext_the_private_key_comes_only_sealed(kms, key_arn):
    out = kms.generate_data_key_pair_without_plaintext(
        KeyId=key_arn, KeyPairSpec="ECC_NIST_P256", EncryptionContext=CONTEXT
    )
    assert "PrivateKeyPlaintext" not in out
    assert out["KeyId"] == key_arn
    assert out["KeyPairSpec"] == "ECC_NIST_P256"
    private = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    check_pair("ECC_NIST_P256", private["Plaintext"], out["PublicKey"])


@pytest.mark.boto3
def test_refusals_are_awss(kms, key_arn):
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.generate_data_key_pair(KeyId=signing["KeyId"], KeyPairSpec="RSA_2048")
    assert error_of(e)[1] == (
        f"{signing['Arn']} key usage is SIGN_VERIFY which is not valid for GenerateDataKeyPair."
    )
    with pytest.raises(kms.exceptions.DryRunOperationException) as e:
        kms.generate_data_key_pair_without_plaintext(KeyId=key_arn, KeyPairSpec="RSA_2048", DryRun=True)
    assert error_of(e)[1] == "The request would have succeeded, but the DryRun option is set."
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.generate_data_key_pair(KeyId=key_arn, KeyPairSpec="SM2")
    with pytest.raises(ClientError) as e:
        kms.generate_data_key_pair(KeyId=key_arn, KeyPairSpec="RSA_1024")
    assert error_of(e)[0] == "ValidationException"
    assert "at 'keyPairSpec' failed to satisfy constraint" in error_of(e)[1]

    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    with pytest.raises(kms.exceptions.DisabledException) as e:
        kms.generate_data_key_pair(KeyId=disabled["KeyId"], KeyPairSpec="ECC_NIST_P256")
    assert error_of(e)[1] == f"{disabled['Arn']} is disabled."


@pytest.mark.cli
def test_the_cli_makes_a_data_key_pair(gateway, key_arn):
    out = aws_json(
        gateway,
        "kms", "generate-data-key-pair",
        "--key-id", key_arn,
        "--key-pair-spec", "ECC_NIST_P384",
        "--encryption-context", "purpose=cli",
    )  # fmt: skip
    assert out["KeyId"].startswith(KEY_ARN_PREFIX)
    assert out["KeyPairSpec"] == "ECC_NIST_P384"
    check_pair(
        "ECC_NIST_P384",
        base64.b64decode(out["PrivateKeyPlaintext"]),
        base64.b64decode(out["PublicKey"]),
    )
