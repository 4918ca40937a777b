#!/usr/bin/env bash
# Installs what a bare machine of this kind lacks, into a cache outside the clone:
# just, tansu (the Kafka-API broker), the C toolchain librdkafka builds with, and
# check-jsonschema (to validate infra/compose.yaml offline). Safe to run again: it skips
# whatever is already there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mkdir -p "$TOOLS_BIN"

apt_install_missing() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  say "apt-get install ${missing[*]}"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# librdkafka is compiled from source by rdkafka-sys: a C toolchain, make, zlib and OpenSSL.
# curl is used by the scripts themselves.
apt_install_missing build-essential pkg-config zlib1g-dev libssl-dev curl

pip_scripts_dir() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }

if ! command -v just >/dev/null 2>&1; then
  say "installing just"
  # rust-just ships the just binary in a wheel: seconds instead of a cargo build.
  if python3 -m pip install -q rust-just 2>/dev/null; then
    ln -sf "$(pip_scripts_dir)/just" "$TOOLS_BIN/just"
  else
    cargo install --locked --root "$SHOPMESH_CACHE/tools" just
  fi
fi

if ! command -v check-jsonschema >/dev/null 2>&1; then
  say "installing check-jsonschema"
  python3 -m pip install -q check-jsonschema
  ln -sf "$(pip_scripts_dir)/check-jsonschema" "$TOOLS_BIN/check-jsonschema"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked --root "$SHOPMESH_CACHE/tools" cargo-nextest
fi

if ! "$TOOLS_BIN/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  # DESIGN.md: --locked (newer dependencies break its build) and the libsql + dynostore
  # features (sqlite:// and memory:// storage engines). 12-15 minutes on 2 cores, once.
  say "installing tansu $TANSU_VERSION (a one-off build of about 15 minutes)"
  CARGO_TARGET_DIR="$SHOPMESH_CACHE/tansu-target" cargo install --locked \
    --root "$SHOPMESH_CACHE/tools" tansu --version "$TANSU_VERSION" --features libsql,dynostore
  # Its build tree is large and never needed again.
  rm -rf "$SHOPMESH_CACHE/tansu-target"
fi

say "tools ready: just $(just --version | cut -d' ' -f2), $("$TOOLS_BIN/tansu" --version 2>/dev/null || echo tansu)"
