#!/usr/bin/env bash
# Create the REML peers' environments, each on its own so neither changes bayeslmm's:
#   benchmarks/.venv-lme      lme-python 0.2.7 (Rust, lme-rs; imported as lme_python) with polars
#   benchmarks/.venv-mixedlm  mixedlm 1.3 (Rust backend) with pandas
# Uses the project's Python 3.12 (scripts/python312.sh); override with PYTHON=/path/to/python3.12.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(bash "$here/../scripts/python312.sh")}"
make_venv() {
    local venv="$here/$1"; shift
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "$@"
}
make_venv .venv-lme "lme-python==0.2.7" polars pandas
make_venv .venv-mixedlm "mixedlm==1.3.*" pandas
"$here/.venv-lme/bin/python" -c "import importlib.metadata as m; print('lme-python', m.version('lme-python'))"
"$here/.venv-mixedlm/bin/python" -c "import importlib.metadata as m; print('mixedlm', m.version('mixedlm'))"
