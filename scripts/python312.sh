#!/usr/bin/env bash
# Print the path of a Python 3.12 interpreter, or fail with a clear message.
# Looks at `python3.12` on PATH, then at pyenv's installed versions.
set -euo pipefail
if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
    command -v python3.12
    exit 0
fi
root="${PYENV_ROOT:-$HOME/.pyenv}"
for p in "$root"/versions/3.12*/bin/python3.12; do
    if [ -x "$p" ]; then echo "$p"; exit 0; fi
done
echo "bayeslmm needs Python 3.12 (python3.12 not found on PATH or under $root/versions)" >&2
exit 1
