#!/bin/sh
# Builds provisiond and the benchmark (release), then runs the benchmark; arguments are passed
# through (see examples/bench.rs). Results: a table on stdout and target/bench-results.json.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin provisiond --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bench" --bin "$target_dir/release/provisiond" "$@"
