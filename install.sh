#!/usr/bin/env bash
# Install ntkcheck with every optional part, keeping the torch you have.
#
#   bash install.sh            # into the active Python environment (a venv is recommended)
#   bash install.sh --dev      # ... and the lint tool (ruff)
#
# torch: an installed torch is kept as it is (CPU or CUDA build). Without one, this installs
# the CUDA build where an NVIDIA driver is present (`nvidia-smi` works) and the much smaller
# CPU build otherwise (from PyTorch's CPU index). Set NTKCHECK_TORCH to a pip requirement to
# choose yourself, e.g. NTKCHECK_TORCH="torch==2.13.0".
#
# laplace-torch and backpack-for-pytorch declare torchvision, which pip would satisfy by
# replacing a CPU torch with a multi-GB CUDA build (and PyPI's torchvision does not import
# beside a CPU torch). Nothing ntkcheck uses imports torchvision, so they are installed
# without their declared dependencies, and their real ones (the `uncertainty` extra) first.
set -euo pipefail
cd "$(dirname "$0")"
pip=(python -m pip install --disable-pip-version-check -q)
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n 2,15p "$0"; exit 0; fi

if python -W ignore -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping torch $(python -W ignore -c 'import torch; print(torch.__version__)')"
elif [ -n "${NTKCHECK_TORCH:-}" ]; then
  "${pip[@]}" "$NTKCHECK_TORCH"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "install.sh: no torch installed; an NVIDIA GPU is present: installing the CUDA build"
  "${pip[@]}" torch
else
  echo "install.sh: no torch installed and no NVIDIA GPU: installing the CPU build"
  "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi
torch_before=$(python -W ignore -c "import torch; print(torch.__version__)")

"${pip[@]}" -e ".[uncertainty]"          # ntkcheck and the extra's real dependencies
"${pip[@]}" --no-deps laplace-torch==0.3 backpack-for-pytorch==1.7.1 curvlinops-for-pytorch==3.0.1
if [ "${1:-}" = "--dev" ]; then "${pip[@]}" -e ".[dev]"; fi

torch_after=$(python -W ignore -c "import torch; print(torch.__version__)")
if [ "$torch_before" != "$torch_after" ]; then
  echo "install.sh: torch changed from $torch_before to $torch_after; please report this" >&2
  exit 1
fi
python -c "import ntkcheck, laplace, curvlinops; print('ntkcheck', ntkcheck.__version__, 'with laplace-torch and curvlinops, torch', '$torch_after')"
