"""Client side of scripts/soak: a mixed KMS load for a fixed time.

Run by scripts/soak with a Python that has boto3 (tests/compat/.venv, or
target/bench-venv):

    soak_kms.py --dir D --endpoint URL --pid PID --seconds S --threads T
                [--interval I] [--rss-bound-mib M] [--writes-per-sec W]

D is a directory made by scripts/setup-token (credentials), PID the
gateway's process id (its RSS is read from /proc/PID/status).

T threads, each with its own boto3 client (retries off, so every error is
seen), pick operations at random: GenerateDataKey (by key id or alias, with an
encryption context), Decrypt and ReEncrypt of earlier ciphertexts (the
plaintext must come back unchanged), and, rate-limited to W per second in
all so the token does not grow without bound, CreateKey, RotateKeyOnDemand
and UpdateAlias. Every I seconds one row: requests, req/s, errors, p50 and
p99 latency of that interval, the gateway's RSS. At the end a summary.

Exit status 0 only if no request failed (any error: 5xx, an unexpected
exception, a connection error, a wrong plaintext; the only expected error is
ThrottlingException, the gateway's back-pressure, counted and shown) and the
gateway's RSS after warm-up (the first quarter of the run) grew by at most
M MiB; 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import configparser
import math
import random
import sys
import threading
import time
from pathlib import Path

import kms_isolate  # noqa: E402,F401  (before boto3: see the module)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

REGION = "us-east-1"
ALIASES = 8
SEED_KEYS = 4
RECENT = 2000
EXPECTED_ERRORS = {"ThrottlingException"}
# Operation weights of the read-mostly mix; writes are drawn on top of it
# (rate-limited).
READ_MIX = [("GenerateDataKey", 50), ("Decrypt", 35), ("ReEncrypt", 15)]
WRITES = ["CreateKey", "RotateKeyOnDemand", "UpdateAlias"]


def client(directory: str, endpoint: str):
    creds = configparser.ConfigParser()
    creds.read(Path(directory) / "credentials")
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=creds["default"]["aws_access_key_id"],
        aws_secret_access_key=creds["default"]["aws_secret_access_key"],
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=4,
        ),
    )


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    # Nearest rank.
    i = min(len(sorted_values), max(1, math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[i - 1]


class State:
    def __init__(self, keys: list[str], aliases: list[str]):
        self.lock = threading.Lock()
        self.keys = keys
        self.aliases = aliases
        self.recent = collections.deque(maxlen=RECENT)  # (blob, context, plaintext)
        self.latencies: list[float] = []  # this interval, ms
        self.all_latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.requests = collections.Counter()  # op -> count
        self.errors = collections.Counter()  # (op, kind) -> count
        self.interval_requests = 0
        self.interval_errors = 0
        self.write_tokens = 0.0
        self.write_refill = time.monotonic()
        self.examples: dict[tuple[str, str], str] = {}

    def take_write(self, per_sec: float) -> bool:
        with self.lock:
            now = time.monotonic()
            self.write_tokens = min(2.0, self.write_tokens + (now - self.write_refill) * per_sec)
            self.write_refill = now
            if self.write_tokens >= 1.0:
                self.write_tokens -= 1.0
                return True
            return False

    def record(self, op: str, ms: float, error: tuple[str, str] | None):
        with self.lock:
            self.requests[op] += 1
            self.interval_requests += 1
            if error is None:
                self.latencies.append(ms)
                self.all_latencies[op].append(ms)
            else:
                kind, message = error
                self.errors[(op, kind)] += 1
                self.interval_errors += 1
                self.examples.setdefault((op, kind), message[:300])


def worker(args, state: State, stop: threading.Event, seed: int):
    rng = random.Random(seed)
    kms = client(args.dir, args.endpoint)
    read_ops = [op for op, _ in READ_MIX]
    read_weights = [w for _, w in READ_MIX]
    n = 0
    while not stop.is_set():
        n += 1
        op = rng.choices(read_ops, read_weights)[0]
        if rng.random() < 0.2 and state.take_write(args.writes_per_sec):
            op = rng.choice(WRITES)
        with state.lock:
            key = rng.choice(state.keys)
            alias = rng.choice(state.aliases)
            sample = rng.choice(state.recent) if state.recent else None
        if op in ("Decrypt", "ReEncrypt") and sample is None:
            op = "GenerateDataKey"
        t0 = time.perf_counter()
        error = None
        try:
            if op == "GenerateDataKey":
                context = {"soak": f"{seed}-{n}"}
                out = kms.generate_data_key(
                    KeyId=alias if rng.random() < 0.3 else key,
                    KeySpec="AES_256",
                    EncryptionContext=context,
                )
                if len(out["Plaintext"]) != 32:
                    error = ("WrongPlaintext", f"{len(out['Plaintext'])} bytes")
                else:
                    with state.lock:
                        state.recent.append((out["CiphertextBlob"], context, out["Plaintext"]))
            elif op == "Decrypt":
                blob, context, plaintext = sample
                out = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
                if out["Plaintext"] != plaintext:
                    error = ("WrongPlaintext", "Decrypt returned another plaintext")
            elif op == "ReEncrypt":
                blob, context, plaintext = sample
                out = kms.re_encrypt(
                    CiphertextBlob=blob,
                    SourceEncryptionContext=context,
                    DestinationKeyId=key,
                    DestinationEncryptionContext=context,
                )
                with state.lock:
                    state.recent.append((out["CiphertextBlob"], context, plaintext))
            elif op == "CreateKey":
                new = kms.create_key(Description="soak")["KeyMetadata"]["KeyId"]
                with state.lock:
                    state.keys.append(new)
            elif op == "RotateKeyOnDemand":
                kms.rotate_key_on_demand(KeyId=key)
            elif op == "UpdateAlias":
                kms.update_alias(AliasName=alias, TargetKeyId=key)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            error = (f"{code} (HTTP {status})", str(e))
        except Exception as e:  # noqa: BLE001 - every failure is counted
            error = (type(e).__name__, str(e))
        state.record(op, (time.perf_counter() - t0) * 1000, error)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--rss-bound-mib", type=float, default=64.0)
    ap.add_argument("--writes-per-sec", type=float, default=2.0)
    args = ap.parse_args()

    kms = client(args.dir, args.endpoint)
    keys = [kms.create_key(Description="soak seed")["KeyMetadata"]["KeyId"] for _ in range(SEED_KEYS)]
    aliases = []
    for i in range(ALIASES):
        name = f"alias/soak-{i}"
        kms.create_alias(AliasName=name, TargetKeyId=keys[i % len(keys)])
        aliases.append(name)
    state = State(keys, aliases)

    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(args, state, stop, 1000 + i), daemon=True)
        for i in range(args.threads)
    ]
    start = time.monotonic()
    rss_start = rss_kib(args.pid)
    samples = []  # (t, requests, errors, p50, p99, rss_kib)
    for t in threads:
        t.start()
    print(
        f"soak: {args.threads} threads for {args.seconds:g} s, a row every {args.interval:g} s "
        f"(writes limited to {args.writes_per_sec:g}/s); gateway pid {args.pid}, RSS at start "
        f"{rss_start / 1024:.1f} MiB",
        flush=True,
    )
    print(f"{'t s':>6} {'requests':>9} {'req/s':>7} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8}", flush=True)
    last = start
    while True:
        end = start + args.seconds
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(args.interval - (now - last), end - now))
        now = time.monotonic()
        with state.lock:
            lat = sorted(state.latencies)
            n, e = state.interval_requests, state.interval_errors
            state.latencies, state.interval_requests, state.interval_errors = [], 0, 0
        try:
            rss = rss_kib(args.pid)
        except (OSError, RuntimeError):
            print("soak: the gateway is gone", flush=True)
            stop.set()
            return 1
        samples.append((now - start, n, e, percentile(lat, 50), percentile(lat, 99), rss))
        print(
            f"{now - start:6.1f} {n:9d} {n / max(now - last, 1e-9):7.1f} {e:6d} "
            f"{percentile(lat, 50):7.1f} {percentile(lat, 99):7.1f} {rss / 1024:8.1f}",
            flush=True,
        )
        last = now
    stop.set()
    for t in threads:
        t.join(timeout=40)
    elapsed = time.monotonic() - start
    rss_end = rss_kib(args.pid)

    with state.lock:
        total = sum(state.requests.values())
        all_lat = sorted(x for v in state.all_latencies.values() for x in v)
        errors = dict(state.errors)
        examples = dict(state.examples)
        per_op = {op: sorted(v) for op, v in state.all_latencies.items()}
        requests = dict(state.requests)
        key_count = len(state.keys)
    rss_all = [rss_start] + [s[5] for s in samples] + [rss_end]
    warm = [s for s in samples if s[0] >= args.seconds / 4]
    rss_warm = warm[0][5] if warm else rss_start
    growth_mib = (max([s[5] for s in warm] + [rss_end]) - rss_warm) / 1024

    print()
    print(f"soak summary: {total} requests in {elapsed:.1f} s ({total / elapsed:.1f} req/s) from {args.threads} threads")
    for op in sorted(requests):
        lat = per_op.get(op, [])
        print(
            f"  {op:<18} {requests[op]:8d} requests  p50 {percentile(lat, 50):7.1f} ms  p99 {percentile(lat, 99):7.1f} ms"
        )
    print(f"  latency (all operations): p50 {percentile(all_lat, 50):.1f} ms, p99 {percentile(all_lat, 99):.1f} ms")
    print(f"  keys at the end: {key_count}")
    n_errors = sum(errors.values())
    unexpected = {k: v for k, v in errors.items() if k[1].split(" ")[0] not in EXPECTED_ERRORS}
    print(f"  errors: {n_errors} ({sum(unexpected.values())} unexpected)")
    for (op, kind), count in sorted(errors.items()):
        print(f"    {op}: {kind}: {count}  e.g. {examples[(op, kind)]}")
    print(
        f"  gateway RSS: start {rss_start / 1024:.1f} MiB, max {max(rss_all) / 1024:.1f} MiB, "
        f"end {rss_end / 1024:.1f} MiB; after warm-up ({rss_warm / 1024:.1f} MiB at "
        f"{warm[0][0] if warm else 0:.0f} s) it grew {growth_mib:.1f} MiB (bound {args.rss_bound_mib:g} MiB)"
    )
    ok = True
    if unexpected:
        print("soak: FAILED: requests failed", flush=True)
        ok = False
    if growth_mib > args.rss_bound_mib:
        print("soak: FAILED: the gateway's RSS grew past the bound after warm-up", flush=True)
        ok = False
    if total == 0:
        print("soak: FAILED: no request was made", flush=True)
        ok = False
    if ok:
        print("soak: OK", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
