#!/usr/bin/env bash
# Runs every check and test of the workspace, from a clean clone on a fresh machine.
# Installs what the tests need first (today: a Rust toolchain with rustfmt/clippy, which the
# machine has; cargo-nextest if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
cargo nextest run --workspace --all-targets --no-fail-fast

step "doc tests"
cargo test --workspace --doc

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "the main example, end to end with real processes"
timeout 60 cargo run --quiet --example hello_cluster

step "all green"
