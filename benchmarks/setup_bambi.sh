#!/usr/bin/env bash
# Create benchmarks/.venv-bambi: Bambi in its own environment, because Bambi 0.21
# pins formulae<0.7 and must not change bayeslmm's environment. Uses the same
# Python 3.12 as the project; override with PYTHON=/path/to/python3.12.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
venv="$here/.venv-bambi"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "bambi==0.21.*" pandas
"$venv/bin/python" -c "import bambi, pymc; print('bambi', bambi.__version__, 'pymc', pymc.__version__)"
