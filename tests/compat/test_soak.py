"""The short form of scripts/soak: 15 s of the mixed load (GenerateDataKey,
Decrypt, ReEncrypt, CreateKey, RotateKeyOnDemand, UpdateAlias) against the
binary under test, on a token of its own; no request may fail and the
gateway's RSS must stay within the script's bound."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_soak_15_seconds_has_no_errors():
    binary = os.environ.get("KMSGATE_BIN", str(REPO / "target" / "debug" / "kmsgate"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    env.pop("SOFTHSM2_CONF", None)
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "soak"), "--seconds", "15", "--threads", "4", "--binary", binary],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = f"--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"
    sys.stdout.write(run.stdout)
    assert run.returncode == 0, f"scripts/soak failed (exit {run.returncode})\n{report}"
    summary = re.search(r"^soak summary: (\d+) requests", run.stdout, re.M)
    assert summary and int(summary.group(1)) > 0, report
    errors = re.search(r"^  errors: (\d+) \((\d+) unexpected\)", run.stdout, re.M)
    assert errors, report
    assert int(errors.group(2)) == 0, report
    assert re.search(r"^soak: OK$", run.stdout, re.M), report
    # Every row of the table has a sample of the gateway's RSS.
    rows = re.findall(r"^\s+\d+\.\d+\s+\d+\s+[\d.]+\s+\d+\s+[\d.na]+\s+[\d.na]+\s+([\d.]+)$", run.stdout, re.M)
    assert len(rows) >= 3, report
