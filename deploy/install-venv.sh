#!/bin/sh
# Builds the receiver's wheel and installs it, with its pinned dependencies and PostgreSQL
# support, into a new virtual environment at $1. The Dockerfile's build stage runs this, and
# so does the test that checks what the image runs.
set -eu
venv="$1"
project="$(cd "$(dirname "$0")/.." && pwd)"
wheels="$(mktemp -d)"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --constraint "$project/constraints.txt" pip
"$venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$wheels" "$project"
"$venv/bin/pip" install --quiet --constraint "$project/constraints.txt" \
    "$(ls "$wheels"/receiver-*.whl)[postgres]"
rm -rf "$wheels"
