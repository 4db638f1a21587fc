#!/usr/bin/env bash
# Install the command-line clients the tests use into .cache/clients (git-ignored), with the
# machine's node/npm. Idempotent: returns at once when the pinned version is already there.
#   gltf-validator: the Khronos glTF Validator (npm), used by tests/gltf_validator.py.
set -euo pipefail
cd "$(dirname "$0")/.."
GLTF_VALIDATOR_VERSION=2.0.0-dev.3.10
DEST=.cache/clients
PKG="$DEST/node_modules/gltf-validator/package.json"
if [ -f "$PKG" ] && grep -q "\"version\": \"$GLTF_VALIDATOR_VERSION\"" "$PKG"; then
    exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install_clients.sh: node and npm are needed to install gltf-validator (e.g. apt-get install nodejs npm)" >&2
    exit 1
fi
mkdir -p "$DEST"
npm install --prefix "$DEST" --no-audit --no-fund --no-save --loglevel=error \
    "gltf-validator@$GLTF_VALIDATOR_VERSION"
grep -q "\"version\": \"$GLTF_VALIDATOR_VERSION\"" "$PKG"
echo "installed gltf-validator $GLTF_VALIDATOR_VERSION into $DEST"
