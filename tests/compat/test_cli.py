"""The AWS CLI works against kmsgate with only the two exports of scripts/run:
AWS_CONFIG_FILE (region, endpoint_url) and AWS_SHARED_CREDENTIALS_FILE."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KEY_ARN_PREFIX

pytestmark = pytest.mark.cli

AWS = Path(sys.executable).parent / "aws"


def aws(gateway, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(AWS), *args, "--output", "json"],
        env=gateway.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, f"aws {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def aws_json(gateway, *args: str) -> dict:
    return json.loads(aws(gateway, *args).stdout)


@pytest.fixture(scope="module")
def cli_key(gateway) -> dict:
    assert AWS.exists(), f"the AWS CLI is not installed next to {sys.executable}"
    return aws_json(gateway, "kms", "create-key", "--description", "created by the AWS CLI")["KeyMetadata"]


def test_create_key_answers_with_key_metadata(cli_key):
    assert cli_key["Arn"] == KEY_ARN_PREFIX + cli_key["KeyId"]
    assert cli_key["KeyState"] == "Enabled"
    assert cli_key["Description"] == "created by the AWS CLI"


def test_generate_data_key_then_decrypt_with_the_same_context(gateway, cli_key, tmp_path):
    gdk = aws_json(
        gateway,
        "kms", "generate-data-key",
        "--key-id", cli_key["KeyId"],
        "--key-spec", "AES_256",
        "--encryption-context", "Purpose=Test",
    )  # fmt: skip
    assert gdk["KeyId"] == cli_key["Arn"]
    assert len(base64.b64decode(gdk["Plaintext"])) == 32

    blob = tmp_path / "data-key.enc"
    blob.write_bytes(base64.b64decode(gdk["CiphertextBlob"]))
    dec = aws_json(
        gateway,
        "kms", "decrypt",
        "--ciphertext-blob", f"fileb://{blob}",
        "--encryption-context", "Purpose=Test",
    )  # fmt: skip
    assert dec["Plaintext"] == gdk["Plaintext"]
    assert dec["KeyId"] == cli_key["Arn"]

    wrong = aws(
        gateway,
        "kms", "decrypt",
        "--ciphertext-blob", f"fileb://{blob}",
        "--encryption-context", "Purpose=Other",
        check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "InvalidCiphertextException" in wrong.stderr


def test_list_keys_contains_the_key(gateway, cli_key):
    keys = aws_json(gateway, "kms", "list-keys")["Keys"]
    assert {"KeyId": cli_key["KeyId"], "KeyArn": cli_key["Arn"]} in keys


def test_the_endpoint_comes_from_the_aws_config_file(gateway):
    env = gateway.cli_env()
    assert not any(k.startswith("AWS_ENDPOINT_URL") for k in env)
    assert f"endpoint_url = {gateway.endpoint}" in gateway.config_file.read_text()
