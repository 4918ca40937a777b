#!/usr/bin/env bash
# The Go workshop's "automated test script", kept under its name: the end-to-end scenarios
# through the gateway (the `smoke` crate, `just smoke`) against a running stack. Start the
# stack first with `just up` (or `docker compose up -d`). SMOKE_GATEWAY (or --gateway)
# overrides the address; --help lists the options.
set -euo pipefail
cd "$(dirname "$0")"
exec cargo run -q -p smoke --bin smoke -- "$@"
