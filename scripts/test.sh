#!/usr/bin/env bash
# Runs every check and test of the workspace, from a clean clone on a fresh machine.
# Installs what the tests need first: Debian packages for the real parts the tests start
# (etcd, runc, containerd, CNI plugins, nftables, busybox for test images, protoc for the
# gRPC clients), and cargo-nextest if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server etcd-client protobuf-compiler libprotobuf-dev runc containerd containernetworking-plugins
          busybox-static nftables iptables iproute2 curl util-linux ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean build gains nothing from incremental caches, and they are a third of the target dir.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "tests"
cargo nextest run --workspace --all-features --no-fail-fast

step "doc tests"
cargo test --workspace --all-features --doc

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

# Built with the features the tests were built with, so only linking is left; the time limits
# below are for running them, not for compiling (a busy machine once took more than 60 s).
step "building the examples"
cargo build --quiet --workspace --all-features --examples

step "the in-process example, end to end with real processes"
timeout 60 target/debug/examples/hello_cluster

step "a controller for the user's own kind (Greeting), against the API server over HTTP"
timeout 60 target/debug/examples/greeting_controller

step "the quickstart as a new user drives it with kubectl (apply, NodePort, scale, restart, delete)"
timeout 600 ./scripts/quickstart-smoke.sh

step "all green (target dir: $(du -sh target 2>/dev/null | cut -f1))"
