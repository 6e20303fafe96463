# Sourced by tools/dist_*.sh and tools/slurm_*.sh: sets PYTHON, the
# interpreter that runs mmdaf, and checks that it can import torch.
#
#   source "$(dirname "$0")/misc/find_python.sh"
#   find_python REPO_ROOT SCRIPT_NAME
#
# Order (the first that applies wins):
#   1. PYTHON, when set;
#   2. an activated environment: a virtualenv (VIRTUAL_ENV) or a conda
#      environment other than base (CONDA_PREFIX);
#   3. the repository's .venv, which `make install` creates;
#   4. python, else python3, on PATH.
# Without step 3 a fresh shell after `make demo` would pick the system python,
# which has no torch.

find_python() {
    local repo_root=$1 script_name=$2
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -n "${VIRTUAL_ENV:-}" && -x "${VIRTUAL_ENV}/bin/python" ]]; then
            PYTHON="${VIRTUAL_ENV}/bin/python"
        elif [[ -n "${CONDA_PREFIX:-}" && "${CONDA_DEFAULT_ENV:-base}" != "base" \
                && -x "${CONDA_PREFIX}/bin/python" ]]; then
            PYTHON="${CONDA_PREFIX}/bin/python"
        elif [[ -x "$repo_root/.venv/bin/python" ]]; then
            PYTHON="$repo_root/.venv/bin/python"
        else
            PYTHON=$(command -v python || command -v python3 || true)
        fi
    fi
    if [[ -z "$PYTHON" ]]; then
        echo "$script_name: no python found: run \`make install\` or set PYTHON" >&2
        exit 1
    fi
    # find_spec does not import torch, so this check costs milliseconds.
    if ! "$PYTHON" -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("torch") is None)' 2>/dev/null; then
        echo "$script_name: $PYTHON cannot import torch. Run \`make install\`" \
            "(creates $repo_root/.venv, used by default), activate the environment" \
            "that has mmdaf installed, or set PYTHON=/path/to/python." >&2
        exit 1
    fi
    echo "$script_name: using $PYTHON" >&2
}
