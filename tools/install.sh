#!/usr/bin/env bash
# One idempotent install: .venv in the repo with the pinned OpenMMLab stack and densevlm_mm (editable).
#
#   bash tools/install.sh            # or: make install
#
# Environment:
#   PYTHON               interpreter that creates the venv (default: python3, must be 3.10/3.11)
#   VENV                 venv folder (default: .venv)
#   DENSEVLM_WHEELHOUSE  cache of built wheels (default: ~/.cache/densevlm_mm/wheels); the mmcv wheel is
#                        looked up in $DENSEVLM_WHEELHOUSE/<key>/ and then $DENSEVLM_WHEELHOUSE/, where
#                        <key> = torch-<version>-<cpu|cuXYZ>; a fresh build is stored under <key>/.
#   MAX_JOBS             parallel compile jobs for the mmcv build (default: number of cores)
#   FORCE_CUDA=1         build mmcv's CUDA ops (default: on when nvcc and a GPU are visible)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WHEELHOUSE=${DENSEVLM_WHEELHOUSE:-$HOME/.cache/densevlm_mm/wheels}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
STAMP="$VENV/.densevlm_installed"
say() { echo "[install $(date +%H:%M:%S)] $*"; }

want=$(cat setup.py requirements/*.txt tools/install.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  say "environment in $VENV is up to date (delete $STAMP to force a reinstall)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$ROOT/$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"
$PIP install -q --upgrade pip wheel

say "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (about a minute from a local cache, longer from PyPI)"
$PIP install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

if command -v nvcc >/dev/null 2>&1 && $PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  export FORCE_CUDA=${FORCE_CUDA:-1}
fi
if [ "${FORCE_CUDA:-0}" = "1" ]; then
  flavour=$($PY -c 'import torch; print("cu" + torch.version.cuda.replace(".", ""))')
else
  flavour=cpu
fi
KEY="torch-$TORCH_VERSION-$flavour"

mmcv_ok() { $PY -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; }
if mmcv_ok; then
  say "mmcv $MMCV_VERSION with ops is already installed"
else
  wheel=$(ls "$WHEELHOUSE/$KEY"/mmcv-$MMCV_VERSION-*.whl "$WHEELHOUSE"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    say "no cached mmcv $MMCV_VERSION wheel for $KEY in $WHEELHOUSE: building it from source once."
    say "this takes about 12 minutes on 2 cores (compiler output goes to $WHEELHOUSE/$KEY/build.log)"
    mkdir -p "$WHEELHOUSE/$KEY"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    # mmcv's setup.py imports pkg_resources, which setuptools>=70 no longer ships (torch pulled a
    # newer one in): downgrade right before the build, and read the sdist without isolation.
    $PIP install -q 'setuptools<70' ninja
    (cd "$build" && $PIP download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION")
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch 2.14's headers refuse anything older than C++20.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS="-g0" CXXFLAGS="-g0" \
        $PIP wheel --no-build-isolation --no-deps -w "$build/out" . > "$WHEELHOUSE/$KEY/build.log" 2>&1 &
     pid=$!; while kill -0 $pid 2>/dev/null; do sleep 60; say "  mmcv build still running ($(wc -l < "$WHEELHOUSE/$KEY/build.log") log lines)"; done; wait $pid) \
      || { say "mmcv build failed, see $WHEELHOUSE/$KEY/build.log"; exit 1; }
    built=$(ls "$build"/out/mmcv-*.whl)
    $PIP install -q "$built"  # with its dependencies (opencv, addict, ...)
    mmcv_ok || { say "the built mmcv wheel does not import mmcv.ops (see: $PY -c 'import mmcv.ops'); not caching it"; exit 1; }
    cp "$built" "$WHEELHOUSE/$KEY/"
    wheel="$WHEELHOUSE/$KEY/$(basename "$built")"
    say "cached $wheel"
  fi
  say "installing mmcv from $wheel"
  $PIP install -q "$wheel"
  mmcv_ok || { say "mmcv from $wheel does not import mmcv.ops (built for another torch?). Remove it and rerun."; exit 1; }
fi

say "installing the OpenMMLab stack, open_clip, timm and test tools"
$PIP install -q -r requirements/runtime.txt -r requirements/mm.txt -r requirements/tests.txt \
  "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
say "installing densevlm_mm (editable)"
$PIP install -q --no-deps --no-build-isolation -e .
$PY - <<'PY'
import importlib
for name in ['torch', 'torchvision', 'mmengine', 'mmcv', 'mmcv.ops', 'mmdet', 'mmseg', 'mmpretrain',
             'open_clip', 'timm', 'densevlm_mm']:
    importlib.import_module(name)
import open_clip, os
assert 'site-packages' in open_clip.__file__, f'open_clip is shadowed by {open_clip.__file__}'
print('[install] all packages import; open_clip from', os.path.dirname(open_clip.__file__))
PY
echo "$want" > "$STAMP"
say "done"
