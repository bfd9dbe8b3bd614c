"""Imported first by the helper scripts (bench_kms.py, soak_kms.py): nothing
from the machine's environment may point their AWS clients elsewhere, so every
AWS_* and BOTO_* variable is dropped and the shared config, credentials and
EC2 metadata lookups are turned off before boto3 is imported."""

import os

for _name in list(os.environ):
    if _name.startswith(("AWS_", "BOTO_")):
        del os.environ[_name]
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
