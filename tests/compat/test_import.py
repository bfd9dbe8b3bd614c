"""Key import (BYOK) with real clients: boto3 and the AWS CLI wrap key
material with Python's `cryptography`, as AWS's own import instructions do,
and kmsgate's blob format (docs/ciphertext-format.md) is rebuilt here, so an
imported AES key is shown to be the same key outside and inside kmsgate."""

from __future__ import annotations

import base64
import os
import struct
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from conftest import KEY_ARN_PREFIX
from test_cli import aws, aws_json

pytestmark = pytest.mark.boto3

OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def wrap(public_key_der: bytes, material: bytes) -> bytes:
    public_key = serialization.load_der_public_key(public_key_der)
    return public_key.encrypt(material, OAEP_SHA1)


def import_material(kms, key_id: str, material: bytes) -> None:
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


def encode_context(context: dict[str, str]) -> bytes:
    out = struct.pack(">I", len(context))
    for k in sorted(context, key=lambda k: k.encode()):
        kb, vb = k.encode(), context[k].encode()
        out += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
    return out


def test_an_imported_aes_key_decrypts_a_ciphertext_made_outside_kmsgate(kms):
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert (key["KeyState"], key["Origin"], key["Enabled"]) == ("PendingImport", "EXTERNAL", False)
    material = os.urandom(32)
    import_material(kms, key["KeyId"], material)
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

    # A blob made here, with the material and the documented format.
    context = {"purpose": "compat", "tenant": "acme"}
    header = b"\x01" + uuid.UUID(key["KeyId"]).bytes + struct.pack(">I", 1) + b"\x0c"
    iv = os.urandom(12)
    sealed = AESGCM(material).encrypt(iv, b"made outside kmsgate", header + encode_context(context))
    out = kms.decrypt(CiphertextBlob=header + iv + sealed, EncryptionContext=context)
    assert out["Plaintext"] == b"made outside kmsgate"
    assert out["KeyId"] == key["Arn"]

    # And the other way: kmsgate's blob opens here.
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"made by kmsgate", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    aad = blob[:22] + encode_context(context)
    assert AESGCM(material).decrypt(blob[22:34], blob[34:], aad) == b"made by kmsgate"


def test_get_parameters_for_import_of_a_generated_key_is_refused_in_awss_words(kms, key_arn):
    with pytest.raises(ClientError) as e:
        kms.get_parameters_for_import(
            KeyId=key_arn, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        )
    assert e.value.response["Error"]["Code"] == "UnsupportedOperationException"
    assert e.value.response["Error"]["Message"] == (
        f"{key_arn} origin is AWS_KMS which is not valid for this operation."
    )


@pytest.mark.cli
def test_the_aws_cli_imports_key_material(gateway, tmp_path):
    key = aws_json(gateway, "kms", "create-key", "--origin", "EXTERNAL")["KeyMetadata"]
    params = aws_json(
        gateway,
        "kms", "get-parameters-for-import",
        "--key-id", key["KeyId"],
        "--wrapping-algorithm", "RSAES_OAEP_SHA_1",
        "--wrapping-key-spec", "RSA_3072",
    )
    assert params["KeyId"] == KEY_ARN_PREFIX + key["KeyId"]
    token = tmp_path / "token.bin"
    token.write_bytes(base64.b64decode(params["ImportToken"]))
    wrapped = tmp_path / "material.bin"
    wrapped.write_bytes(wrap(base64.b64decode(params["PublicKey"]), os.urandom(32)))
    aws(
        gateway,
        "kms", "import-key-material",
        "--key-id", key["KeyId"],
        "--import-token", f"fileb://{token}",
        "--encrypted-key-material", f"fileb://{wrapped}",
        "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    described = aws_json(gateway, "kms", "describe-key", "--key-id", key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled"
    assert described["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"


def import_private_key(kms, key_id: str, private_key) -> None:
    """RSA_AES_KEY_WRAP_SHA_1 of the key's PKCS#8, as AWS's instructions
    wrap asymmetric material: OAEP of an ephemeral AES key, then AES key
    wrap with padding of the material."""
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_1", WrappingKeySpec="RSA_3072"
    )
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    aes_key = os.urandom(32)
    wrapped = wrap(params["PublicKey"], aes_key) + aes_key_wrap_with_padding(aes_key, pkcs8)
    kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapped,
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )


@pytest.mark.parametrize(
    "key_spec,algorithm",
    [("RSA_2048", "RSASSA_PSS_SHA_256"), ("ECC_NIST_P256", "ECDSA_SHA_256")],
)
def test_an_imported_signing_key_is_its_twin_outside_kmsgate(kms, key_spec, algorithm):
    if key_spec == "RSA_2048":
        twin = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        scheme = (padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    else:
        twin = ec.generate_private_key(ec.SECP256R1())
        scheme = (ec.ECDSA(hashes.SHA256()),)
    key = kms.create_key(Origin="EXTERNAL", KeySpec=key_spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert (key["KeyState"], key["Origin"]) == ("PendingImport", "EXTERNAL")
    import_private_key(kms, key["KeyId"], twin)
    meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert (meta["KeyState"], meta["KeySpec"], meta["KeyUsage"]) == ("Enabled", key_spec, "SIGN_VERIFY")
    public = twin.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert kms.get_public_key(KeyId=key["KeyId"])["PublicKey"] == public

    # A message signed here with the twin verifies in kmsgate...
    message = b"signed outside kmsgate"
    signature = twin.sign(message, *scheme)
    out = kms.verify(
        KeyId=key["KeyId"], Message=message, Signature=signature, SigningAlgorithm=algorithm
    )
    assert out["SignatureValid"] is True
    with pytest.raises(ClientError) as e:
        kms.verify(
            KeyId=key["KeyId"], Message=b"another message", Signature=signature, SigningAlgorithm=algorithm
        )
    assert e.value.response["Error"]["Code"] == "KMSInvalidSignatureException"

    # ...and kmsgate's signature verifies here.
    theirs = kms.sign(KeyId=key["KeyId"], Message=b"signed by kmsgate", SigningAlgorithm=algorithm)
    twin.public_key().verify(theirs["Signature"], b"signed by kmsgate", *scheme)
