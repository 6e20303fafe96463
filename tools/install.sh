#!/usr/bin/env bash
# Creates .venv at the repository root and installs mmdaf with everything it
# needs. Idempotent: on a ready .venv whose requirement files did not change it
# returns in about a second.
#
# mmcv 2.1.0 has no wheel for torch 2.14, so it is compiled from its sdist once
# (CPU ops only when no GPU is visible, about 8 minutes on 2 cores) and the wheel
# is cached in $MMDAF_WHEEL_CACHE (default ~/.cache/mmdaf/wheels) keyed by the
# torch version, so that later installs take seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMDAF_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${MMDAF_WHEEL_CACHE:-$HOME/.cache/mmdaf/wheels}
MMCV_VERSION=2.1.0
STAMP=$VENV/.mmdaf-install-stamp

log() { printf '[install] %s\n' "$*"; }

stamp_value() {
    cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/install.sh" | sha256sum | cut -d' ' -f1
}

if [[ -f $STAMP && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
    log "$VENV is up to date"
    exit 0
fi

if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# One resolver run for both: torch pulls in setuptools, which must stay below 80.
log "build tools and torch (the large download)"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt" -r "$ROOT/requirements/torch.txt"

TORCH_VERSION=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
MMCV_CACHE=$CACHE/torch-$TORCH_VERSION-py$("$VENV/bin/python" -c 'import sys; print("%d%d" % sys.version_info[:2])')

build_mmcv() {
    local work
    work=$(mktemp -d)
    log "building mmcv $MMCV_VERSION from source into $MMCV_CACHE (takes several minutes)"
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
    # torch >= 2.10 headers refuse to compile below C++20.
    sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$MMCV_CACHE"
    (cd "$work/mmcv-$MMCV_VERSION" &&
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$work/dist" .)
    # Copy then rename, so that a build killed half-way never leaves a broken
    # wheel in the cache.
    local built
    built=$(ls "$work"/dist/mmcv-*.whl)
    cp "$built" "$MMCV_CACHE/.partial.whl"
    mv "$MMCV_CACHE/.partial.whl" "$MMCV_CACHE/$(basename "$built")"
    rm -rf "$work"
}

if ! "$VENV/bin/python" -c "import mmcv, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    if ! ls "$MMCV_CACHE"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        build_mmcv
    fi
    log "installing cached mmcv wheel from $MMCV_CACHE"
    "${PIP[@]}" install -q --no-deps "$MMCV_CACHE"/mmcv-"$MMCV_VERSION"-*.whl
fi

log "OpenMMLab packages and test tools"
"${PIP[@]}" install -q -r "$ROOT/requirements/build.txt" \
    -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"

log "mmdaf (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$VENV/bin/python" -c 'import mmcv.ops, mmdet, mmpretrain, mmdaf; print("[install] ok: mmdaf", mmdaf.__version__)'
stamp_value > "$STAMP"
