"""Asymmetric signing keys through boto3: CreateKey with an RSA or ECC key
spec, GetPublicKey, Sign and Verify, each signature checked independently
with the Python `cryptography` package against the public key, and the
refusals AWS gives."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

CASES = [
    ("ECC_NIST_P256", "ECDSA_SHA_256"),
    ("ECC_NIST_P384", "ECDSA_SHA_384"),
    ("ECC_NIST_P521", "ECDSA_SHA_512"),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
    ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ("RSA_3072", "RSASSA_PSS_SHA_384"),
    ("RSA_4096", "RSASSA_PKCS1_V1_5_SHA_512"),
]

HASHES = {"256": (hashes.SHA256, hashlib.sha256), "384": (hashes.SHA384, hashlib.sha384),
          "512": (hashes.SHA512, hashlib.sha512)}


def error_of(excinfo) -> tuple[str, str | None]:
    err = excinfo.value.response["Error"]
    return err.get("Code"), err.get("Message")


def independently_valid(public_der: bytes, algorithm: str, message: bytes, signature: bytes) -> bool:
    key = load_der_public_key(public_der)
    hash_cls = HASHES[algorithm[-3:]][0]
    try:
        if algorithm.startswith("ECDSA"):
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(signature, message, ec.ECDSA(hash_cls()))
        elif algorithm.startswith("RSASSA_PSS"):
            assert isinstance(key, rsa.RSAPublicKey)
            pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
            key.verify(signature, message, pss, hash_cls())
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(signature, message, padding.PKCS1v15(), hash_cls())
    except InvalidSignature:
        return False
    return True


@pytest.mark.boto3
@pytest.mark.parametrize("spec,algorithm", CASES)
def test_signatures_verify_in_kmsgate_and_in_cryptography(kms, spec, algorithm):
    meta = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert meta["KeySpec"] == spec
    assert meta["KeyUsage"] == "SIGN_VERIFY"
    assert algorithm in meta["SigningAlgorithms"]
    assert "EncryptionAlgorithms" not in meta

    pub = kms.get_public_key(KeyId=meta["KeyId"])
    assert pub["KeyId"] == meta["Arn"]
    assert pub["KeySpec"] == spec
    assert pub["SigningAlgorithms"] == meta["SigningAlgorithms"]

    message = b"artefact digest to be signed"
    digest = HASHES[algorithm[-3:]][1](message).digest()
    for message_type, payload in (("RAW", message), ("DIGEST", digest)):
        out = kms.sign(KeyId=meta["KeyId"], Message=payload, MessageType=message_type,
                       SigningAlgorithm=algorithm)
        assert out["KeyId"] == meta["Arn"]
        assert out["SigningAlgorithm"] == algorithm
        sig = out["Signature"]
        assert independently_valid(pub["PublicKey"], algorithm, message, sig)
        ok = kms.verify(KeyId=meta["KeyId"], Message=payload, MessageType=message_type,
                        Signature=sig, SigningAlgorithm=algorithm)
        assert ok["SignatureValid"] is True

        tampered = b"X" + message[1:]
        assert not independently_valid(pub["PublicKey"], algorithm, tampered, sig)
        with pytest.raises(kms.exceptions.KMSInvalidSignatureException) as e:
            kms.verify(KeyId=meta["KeyId"], Message=tampered, Signature=sig,
                       SigningAlgorithm=algorithm)
        assert error_of(e) == ("KMSInvalidSignatureException", "")


@pytest.mark.boto3
def test_signing_keys_refuse_what_aws_refuses(kms):
    meta = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.sign(KeyId=meta["KeyId"], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert error_of(e) == ("InvalidKeyUsageException",
                           "Algorithm RSASSA_PSS_SHA_256 is incompatible with key spec ECC_NIST_P256.")
    with pytest.raises(kms.exceptions.InvalidKeyUsageException) as e:
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"m")
    assert error_of(e)[1] == f"{meta['Arn']} key usage is SIGN_VERIFY which is not valid for Encrypt."
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.enable_key_rotation(KeyId=meta["KeyId"])
    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(kms.exceptions.ClientError) as e:
        kms.sign(KeyId=rsa_key["KeyId"], Message=b"short", MessageType="DIGEST",
                 SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert error_of(e) == ("ValidationException",
                           "Digest is invalid length for algorithm RSASSA_PSS_SHA_256.")
