#!/bin/sh
# Builds provisiond and the benchmark (release), then runs the benchmark; arguments are passed
# through (see examples/bench.rs). Results: a table on stdout and target/bench-results.json.
#
# The floor (the initial cycle against a plain load generator sending the same requests, part
# of the initial scenario and alone with `--only floor`) needs wrk.
set -eu
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    echo "note: wrk is not installed, so the floor (daemon vs. load generator) is not measured." >&2
    echo "      Install it with: sudo apt-get install -y wrk   (Debian, Ubuntu)" >&2
    echo "                   or: brew install wrk              (macOS)" >&2
    echo "                   or build it from https://github.com/wg/wrk" >&2
fi
cargo build --release --bin provisiond --example bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bench" --bin "$target_dir/release/provisiond" "$@"
