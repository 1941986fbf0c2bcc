#!/usr/bin/env bash
# Builds the Python package into a virtual environment (build/venv, with Debian's numpy, pytest
# and, if installed, torch visible) and runs its pytest suite. The build backend (scikit-build-core)
# and nanobind come from PyPI into that venv once; later runs rebuild incrementally in
# build/python/ (and through ccache). `pip install .` with build isolation works too (README).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${LOAQ_PYTHON:-/usr/bin/python3}
venv=build/venv
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "nanobind>=2.4,<4"
"$venv/bin/python" -c "import numpy" 2>/dev/null || "$venv/bin/python" -m pip install -q numpy
"$venv/bin/python" -c "import pytest" 2>/dev/null || "$venv/bin/python" -m pip install -q pytest
start=$(date +%s)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation ./
echo "(loaq Python package built and installed in $(( $(date +%s) - start )) s)"
# Run from the tests folder so `import loaq` is the installed package, not python/loaq.
cd python/tests
"../../$venv/bin/python" -c "import loaq; print('loaq', loaq.__version__, loaq.build_info)"
exec "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .
