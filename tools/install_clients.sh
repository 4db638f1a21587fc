#!/usr/bin/env bash
# Install the real clients the tests check our exports with, into .cache/clients (git-ignored) and the
# machine's Debian packages. Idempotent: each part returns at once when its pinned version is there.
#   npm (machine's node/npm), into .cache/clients/node_modules:
#     gltf-validator               the Khronos glTF Validator          (tests/gltf_validator.py)
#     @playcanvas/splat-transform  reads/writes PLY, .splat, .spz      (tests/test_splat_clients.py)
#     three, esbuild               the report's 3D view: three.js bundled into .cache/clients/viewer/three_bundle.js
#     playwright-core              drives headless Chromium            (tests/test_report_browser.py)
#   Debian: chromium (headless browser for the report test), when missing and this user may install it.
#   Python 3.11 venv .cache/clients/blender with the `bpy` wheel (Blender as a module; tests/test_blender.py).
# Set HEADFORGE_SKIP_CLIENTS=chromium,blender to leave out the large ones on a laptop (the tests then skip,
# except under CI=true, where they fail).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/clients
mkdir -p "$DEST"
SKIP=",${HEADFORGE_SKIP_CLIENTS:-},"

# ---------------------------------------------------------------------------------------------- npm
NPM_PACKAGES=(
    "gltf-validator@2.0.0-dev.3.10"
    "@playcanvas/splat-transform@2.7.1"   # 3.x needs node >= 22; 2.7 reads and writes .spz through @adobe/spz
    "three@0.187.0"
    "esbuild@0.28.2"
    "playwright-core@1.65.1"
)
npm_ok=1
for spec in "${NPM_PACKAGES[@]}"; do
    name="${spec%@*}"; version="${spec##*@}"
    grep -qs "\"version\": \"$version\"" "$DEST/node_modules/$name/package.json" || npm_ok=0
done
if [ "$npm_ok" = 0 ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "install_clients.sh: node and npm are needed (e.g. apt-get install nodejs npm)" >&2
        exit 1
    fi
    npm install --prefix "$DEST" --no-audit --no-fund --no-save --loglevel=error "${NPM_PACKAGES[@]}"
    for spec in "${NPM_PACKAGES[@]}"; do
        name="${spec%@*}"; version="${spec##*@}"
        grep -q "\"version\": \"$version\"" "$DEST/node_modules/$name/package.json"
    done
    echo "installed ${NPM_PACKAGES[*]} into $DEST"
fi

# the report's three.js bundle: our entry file (headforge/assets/report/viewer_entry.js) + three, one IIFE
ENTRY=headforge/assets/report/viewer_entry.js
BUNDLE="$DEST/viewer/three_bundle.js"
if [ -f "$ENTRY" ] && { [ ! -f "$BUNDLE" ] || [ "$ENTRY" -nt "$BUNDLE" ] || [ "$npm_ok" = 0 ]; }; then
    mkdir -p "$DEST/viewer"
    NODE_PATH="$DEST/node_modules" "$DEST/node_modules/.bin/esbuild" "$ENTRY" --bundle --format=iife \
        --global-name=HeadforgeThree --minify --legal-comments=inline --log-level=warning \
        "--alias:three=./$DEST/node_modules/three" --outfile="$BUNDLE.tmp"
    mv "$BUNDLE.tmp" "$BUNDLE"
    echo "built $BUNDLE (three.js 0.187.0, MIT)"
fi

# ---------------------------------------------------------------------------------------------- chromium
if [[ "$SKIP" != *,chromium,* ]] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then APT=(apt-get); elif command -v sudo >/dev/null; then APT=(sudo apt-get); else APT=(); fi
    if [ ${#APT[@]} = 0 ]; then
        echo "install_clients.sh: chromium is missing and this user cannot install Debian packages;" \
             "install it (apt-get install chromium) or set HEADFORGE_SKIP_CLIENTS=chromium" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -q --no-install-recommends chromium >/dev/null \
        || { "${APT[@]}" update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -q \
             --no-install-recommends chromium >/dev/null; }
    chromium --version
fi

# ---------------------------------------------------------------------------------------------- blender
BPY_VERSION=5.0.1
BLENDER="$DEST/blender"
if [[ "$SKIP" != *,blender,* ]] && ! grep -qs "^Version: $BPY_VERSION\$" "$BLENDER"/lib/python3.11/site-packages/bpy-*.dist-info/METADATA; then
    PY311=$(command -v python3.11 || true)
    if [ -z "$PY311" ]; then
        echo "install_clients.sh: the bpy wheel needs Python 3.11 (python3.11 not found);" \
             "install it or set HEADFORGE_SKIP_CLIENTS=blender" >&2
        exit 1
    fi
    "$PY311" -m venv "$BLENDER"
    "$BLENDER/bin/pip" install -q --disable-pip-version-check "bpy==$BPY_VERSION"
    echo "installed bpy $BPY_VERSION into $BLENDER"
fi
