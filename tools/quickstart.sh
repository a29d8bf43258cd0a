#!/usr/bin/env bash
# Set up (or reuse) mmbinary's virtual environment, then run a job in it.
#
#   bash tools/quickstart.sh demo   # the main job on the embedded data
#   bash tools/quickstart.sh test   # the test suite
#   bash tools/quickstart.sh env    # only set up; print the environment
#
# The environment lives outside the clone, in $MMBINARY_VENV (default
# ~/.cache/mmbinary/venv-py3.11-torch2.13.0), so a fresh clone on the same
# machine reuses it and the slow mmcv build (about 13 minutes on 2 cores).
# Order matters: torch first, then mmcv 2.1.0 built from source against it,
# then mmengine, mmdet, mmsegmentation and mmbinary (editable, with its
# compiled ops). Set PYTHON to pick the interpreter (Python 3.11).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMBINARY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mmbinary/venv-py3.11-torch2.13.0}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

log() { printf '\n[mmbinary] %s\n' "$*" >&2; }
die() { printf '\n[mmbinary] error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

setup_env() {
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "Python 3.11 is needed; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11."
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the virtual environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
  fi
  local py="$VENV/bin/python"
  local pip=("$py" -m pip install --disable-pip-version-check)

  # Dependencies: reinstalled only when a requirements file changed.
  local stamp="$VENV/.mmbinary-requirements"
  local digest
  digest="$(cat "$REPO"/requirements/*.txt | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    log "installing the build requirements (torch first)"
    "${pip[@]}" --upgrade pip
    "${pip[@]}" -r "$REPO/requirements/build.txt"
    log "installing mmcv 2.1.0 (built from source on first use: about 13 minutes on 2 cores)"
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${pip[@]}" --no-build-isolation -r "$REPO/requirements/mmcv.txt"
    log "installing mmengine, mmdet, mmsegmentation and the test requirements"
    "${pip[@]}" -r "$REPO/requirements/runtime.txt" -r "$REPO/requirements/tests.txt"
    echo "$digest" > "$stamp"
  fi

  # mmbinary itself, editable, rebuilt when this clone's C++/CUDA changed.
  local so
  so="$(ls "$REPO"/mmbinary/_C*.so 2>/dev/null | head -n1 || true)"
  local installed_at
  # asked from outside the clone, so that its own mmbinary/ does not answer
  installed_at="$(cd / && "$py" -c 'import mmbinary, os; print(os.path.dirname(os.path.dirname(os.path.abspath(mmbinary.__file__))))' 2>/dev/null || true)"
  if [ -z "$so" ] || [ "$installed_at" != "$REPO" ] \
      || [ -n "$(find "$REPO/mmbinary/ops/csrc" "$REPO/setup.py" -newer "$so" -print -quit)" ]; then
    log "installing mmbinary from $REPO (editable, compiling mmbinary._C)"
    (cd "$REPO" && "${pip[@]}" --no-build-isolation --no-deps -e .)
  fi
  "$py" -c 'import mmbinary.ops as o, sys; o.ext_loaded() or sys.exit("mmbinary._C did not load: %s" % o.ext_load_error())'
}

[ $# -ge 1 ] || usage
job="$1"; shift
case "$job" in
  env)
    setup_env
    "$VENV/bin/python" -m mmbinary.utils.collect_env ;;
  test)
    setup_env
    cd "$REPO"
    MMBINARY_REQUIRE_EXT=1 "$VENV/bin/python" -m pytest tests "$@" ;;
  demo)
    setup_env
    cd "$REPO"
    "$VENV/bin/python" tools/demo.py "$@" ;;
  *) usage ;;
esac
