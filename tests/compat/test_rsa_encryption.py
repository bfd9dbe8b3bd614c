"""RSA encryption keys through boto3 and the AWS CLI: a message encrypted
with the Python `cryptography` package under the public key GetPublicKey
returns (RSAES-OAEP, SHA-1 or SHA-256) decrypts in kmsgate, and kmsgate's
own ciphertexts round-trip; AWS's size limit applies."""

from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_der_public_key

from test_cli import aws_json

HASH = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}


def oaep(algorithm: str) -> padding.OAEP:
    h = HASH[algorithm]
    return padding.OAEP(mgf=padding.MGF1(algorithm=h()), algorithm=h(), label=None)


@pytest.mark.boto3
@pytest.mark.parametrize("algorithm", sorted(HASH))
def test_cryptography_ciphertexts_decrypt_in_kmsgate(kms, algorithm):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    assert key["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    public = load_der_public_key(kms.get_public_key(KeyId=key["KeyId"])["PublicKey"])
    message = b"sealed outside kmsgate"
    ciphertext = public.encrypt(message, oaep(algorithm))
    out = kms.decrypt(KeyId=key["KeyId"], CiphertextBlob=ciphertext, EncryptionAlgorithm=algorithm)
    assert out["Plaintext"] == message
    assert out["KeyId"] == key["Arn"]
    assert out["EncryptionAlgorithm"] == algorithm
    # kmsgate's own ciphertext: a 256-byte block that kmsgate opens.
    mine = kms.encrypt(KeyId=key["KeyId"], Plaintext=message, EncryptionAlgorithm=algorithm)
    assert len(mine["CiphertextBlob"]) == 256
    again = kms.decrypt(KeyId=key["KeyId"], CiphertextBlob=mine["CiphertextBlob"], EncryptionAlgorithm=algorithm)
    assert again["Plaintext"] == message
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x" * 215, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"] == (
        "Algorithm RSAES_OAEP_SHA_1 and key spec RSA_2048 cannot encrypt data larger than 214 bytes.")


@pytest.mark.cli
def test_cli_decrypts_a_cryptography_ciphertext(kms, gateway, tmp_path):
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    public = load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    blob = tmp_path / "ciphertext"
    blob.write_bytes(public.encrypt(b"via the cli", oaep("RSAES_OAEP_SHA_256")))
    out = aws_json(
        gateway,
        "kms", "decrypt",
        "--key-id", key,
        "--encryption-algorithm", "RSAES_OAEP_SHA_256",
        "--ciphertext-blob", f"fileb://{blob}",
    )  # fmt: skip
    assert base64.b64decode(out["Plaintext"]) == b"via the cli"
