#!/usr/bin/env bash
# Runs the whole test suite: starts RabbitMQ (with its management plugin) and PostgreSQL if
# they are not answering, makes the Python virtualenv of the protocol peer test, installs
# poppler-utils (the PDF tests read PDFs with pdftotext), Debian's chromium and the pinned
# playwright-core of the browser suite (tests/tests/browser.rs) when missing, then `cargo test`.
# The compose suite (tests/tests/compose.rs) runs scripts/compose-images.sh itself, which starts
# (or installs) the Docker engine and builds its images from the release binaries built here.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_rabbitmq
ensure_rabbitmq_management
# The private fault-injection node (scripts/fault-broker.sh) starts fresh in every run: one left
# by an earlier run may hold thousands of its queues, or have stopped answering.
scripts/fault-broker.sh reset
purge_test_queues
ensure_postgres
ensure_peer_python
ensure_pdftotext
ensure_chromium
ensure_browser_driver
# The run-script test (tests/tests/run_script.rs) runs scripts/run.sh, which builds the release
# binaries: built here first, so the test's time bound covers starting them, not compiling.
cargo build --release --locked --bins -p offload-api -p offload-worker
cargo test --workspace "$@"
