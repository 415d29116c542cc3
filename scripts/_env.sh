# shellcheck shell=bash
# Sourced by the scripts in this folder: go to the repository root and make sure .venv holds
# the project and its development tools. Not meant to be run on its own.
#
# - .venv is created with python3.11, or python3 when it is 3.11 or newer;
# - `pip install -e '.[dev]'` runs only when pyproject.toml changed since the last install
#   (its SHA-256 is kept in .venv/.installed-pyproject), or when the venv is new;
# - BILLETTERIE_PYTHON=/path/to/python overrides the interpreter used to create .venv.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.installed-pyproject"

log() { printf '%s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${BILLETTERIE_PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        return 0
    fi
    local python
    if ! python="$(find_python)"; then
        log "error: billetterie needs Python 3.11 or newer (python3.11 or python3 on PATH)"
        exit 1
    fi
    log "==> creating .venv with $python ($("$python" --version 2>&1))"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
}

pyproject_hash() {
    "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        "$ROOT/pyproject.toml"
}

ensure_installed() {
    ensure_venv
    local wanted
    wanted="$(pyproject_hash)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
        return 0
    fi
    log "==> installing billetterie and its development tools into .venv (pyproject.toml changed)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$wanted" >"$STAMP"
}
