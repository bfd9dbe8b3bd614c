#!/usr/bin/env bash
# The container's entrypoint (deploy/container/Dockerfile; docs/operations.md
# "Running in a container").
#
# Without KMSGATE_CONFIG: the embedded SoftHSM2. On the first start it makes
# a token, a random PIN and a development credential in the state volume
# (scripts/setup-token, every secret mode 0600), and later starts reuse them.
# The generated config allows plain HTTP off loopback (the container's
# address) with `insecure_plain_http`: a development set-up. Read the
# credential from $KMSGATE_STATE_DIR/softhsm/credentials.
#
# With KMSGATE_CONFIG=/etc/kmsgate/kmsgate.toml (mounted, with the vendor's
# module and its client configuration mounted too): that config, and no
# SoftHSM2 token is made.
#
# Either way `kmsgate doctor` checks the set-up first and the container stops
# if a check fails; then `kmsgate serve` replaces this script (PID 1 gets
# SIGTERM and drains). Arguments are passed to `kmsgate serve`.
#
# Every path can be overridden, so the script also runs outside a container
# (tests/it/container.rs): KMSGATE_BIN, KMSGATE_STATE_DIR, KMSGATE_SETUP_TOKEN,
# KMSGATE_LISTEN.
set -euo pipefail

bin="${KMSGATE_BIN:-/usr/local/bin/kmsgate}"
state="${KMSGATE_STATE_DIR:-/var/lib/kmsgate}"
setup="${KMSGATE_SETUP_TOKEN:-/usr/local/lib/kmsgate/setup-token}"
listen="${KMSGATE_LISTEN:-0.0.0.0:8080}"

say() { echo "entrypoint: $*" >&2; }

if [[ -n "${KMSGATE_CONFIG:-}" ]]; then
    config="$KMSGATE_CONFIG"
    [[ -r "$config" ]] || {
        say "KMSGATE_CONFIG=$config is not readable (mount it)"
        exit 1
    }
else
    dev="$state/softhsm"
    if [[ ! -e "$dev/kmsgate.toml" ]]; then
        say "first start: making a SoftHSM2 token and a development credential in $dev"
        KMSGATE_BIN="$bin" "$setup" "$dev" "${listen##*:}" >&2
        # The container's own address is not a loopback address.
        sed -i 's/^listen = .*/&\ninsecure_plain_http = true/' "$dev/kmsgate.toml"
    fi
    export SOFTHSM2_CONF="$dev/softhsm2.conf"
    config="$dev/kmsgate.toml"
fi

if ! "$bin" doctor --config "$config" --listen "$listen" >&2; then
    say "kmsgate doctor failed (above); not starting"
    exit 1
fi
exec "$bin" serve --config "$config" --listen "$listen" "$@"
