#!/usr/bin/env bash
# Create benchmarks/.venv-bambi: Bambi in its own environment, because Bambi 0.21
# pins formulae<0.7 and must not change bayeslmm's environment. Also installs
# nutpie, Bambi's fastest NUTS backend (`model.fit(inference_method="nutpie")`),
# so the benchmark can compare against Bambi's best sampler. Uses the project's
# Python 3.12 (scripts/python312.sh); override with PYTHON=/path/to/python3.12.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(bash "$here/../scripts/python312.sh")}"
venv="$here/.venv-bambi"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "bambi==0.21.*" nutpie pandas
"$venv/bin/python" -c "import bambi, pymc, nutpie; print('bambi', bambi.__version__, 'pymc', pymc.__version__, 'nutpie', nutpie.__version__)"
