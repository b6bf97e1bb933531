#!/usr/bin/env bash
#! Builds the Worker bundle (build/) offline: wrangler's [build] command and `make build` call this.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
worker-build --release
