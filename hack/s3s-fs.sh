#!/usr/bin/env bash
# Installs s3s-fs, the S3-compatible server the integration tests and the testbed start
# (see docs/testing.md). Idempotent.
set -euo pipefail

S3S_VERSION=0.14.1
if ! command -v s3s-fs >/dev/null 2>&1 || [[ $(s3s-fs --version 2>/dev/null) != *"$S3S_VERSION"* ]]; then
  echo "s3s-fs: cargo install s3s-fs@$S3S_VERSION (a few minutes, once per machine)"
  cargo install "s3s-fs@$S3S_VERSION" --locked --features binary
fi

echo "s3s-fs: ok ($S3S_VERSION)"
