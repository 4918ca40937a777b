# Shopmesh tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

export SHOPMESH_CACHE := env_var_or_default("SHOPMESH_CACHE", env_var("HOME") + "/.cache/shopmesh")
export PATH := SHOPMESH_CACHE + "/tools/bin:" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install what this machine lacks: just, tansu, librdkafka's build needs, check-jsonschema.
install:
    scripts/install-tools.sh

# Bring the whole stack up (compose with a Docker engine, native processes otherwise).
up:
    scripts/stack.sh up

# Stop what `just up` started, and only that.
down:
    scripts/stack.sh down

# End-to-end scenarios through the gateway against the running stack (`just up` first).
smoke:
    cargo run -q -p smoke --bin smoke

# meshctl with any arguments, e.g. `just meshctl services` (no install needed).
# Arguments pass through as they are (`'order_created.>'` stays one argument, unexpanded).
[positional-arguments]
meshctl *ARGS:
    cargo run -q -p meshctl -- "$@"

# The saga's events live, one line each (`meshctl events tail`; e.g. `just events order_created`).
[positional-arguments]
events *ARGS:
    cargo run -q -p meshctl -- events tail "$@"

# Show what listens where.
status:
    scripts/stack.sh status

# Start only the infrastructure the tests need (Postgres, Redis, NATS, tansu).
infra:
    scripts/infra.sh up

# Run every test against the real Postgres, Redis, NATS and Kafka API (started if needed).
test *ARGS: infra
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast {{ARGS}}
    else
        cargo test --workspace --no-fail-fast {{ARGS}}
    fi

# Lints and formatting, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Every bench, one after the other (each prints its own table against its baseline).
bench: bench-mesh bench-middleware bench-gateway bench-saga bench-bridge

# Mesh latency and throughput: raw async-nats vs Channel over NATS vs Channel over HTTP/2.
bench-mesh: infra
    cargo bench -p mesh --bench mesh

# Overhead of the gateway-style middleware stack against a bare service; JWT's cost.
bench-middleware:
    cargo bench -p middleware --bench stack

# GET /products/{id} through the gateway over NATS and HTTP/2 vs product-service directly; warm vs cold cache.
bench-gateway: infra
    cargo bench -p gateway --bench gateway

# POST /orders -> CONFIRMED latency next to raw Kafka produce->consume on the same broker.
bench-saga: infra
    cargo bench -p order-service --bench saga

# Bridge: mirror throughput next to a raw rdkafka consume of the same topic, and the latency it adds.
bench-bridge: infra
    cargo bench -p bridge --bench mirror

# Validate compose.yaml and infra/compose.yaml offline against the compose specification.
check-compose:
    check-jsonschema --builtin-schema vendor.compose-spec compose.yaml infra/compose.yaml
