#!/usr/bin/env bash
# Run every chapter under the `gpu` profile on a CUDA machine, stamped, and print a time table.
# It stops at the first chapter that fails, naming it (the traceback stays in that notebook's error).
#
#   tools/gpu_check.sh           the `gpu` plans, each chapter executed and stamped in place in nbs/
#                                (commit the pages you keep; `git checkout nbs/` drops them)
#   tools/gpu_check.sh --quick   the `test` plans on the GPU (packaged models, a few hundred rows), about
#                                10 minutes: executed into a copy, nothing in nbs/ changes
#   tools/gpu_check.sh --quick 02_finetune 08_llm_instruction_tuning    only those chapters
set -euo pipefail
cd "$(dirname "$0")/.."

profile=gpu
if [ "${1:-}" = "--quick" ]; then profile=test; shift; fi
case "${1:-}" in -*) echo "gpu_check: unknown option $1 (use --quick, then chapter names)" >&2; exit 2;; esac

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU is visible to torch here; run this on a GPU machine (on a CPU: finetune-book build)" >&2
    exit 2
fi
python -c "from finetune_book.core import machine_line, training_precision; print(machine_line(), '| trains in', training_precision())"

nbs=nbs
if [ "$profile" = test ]; then
    nbs=$(mktemp -d)/nbs && cp -r nbs "$nbs"   # the executed copies; the committed pages stay as they are
fi
chapters=()
for name in "$@"; do
    [ -f "$nbs/$name.ipynb" ] || { echo "gpu_check: no chapter $name in nbs/" >&2; exit 2; }
    chapters+=("$nbs/$name.ipynb")
done
[ ${#chapters[@]} -gt 0 ] || chapters=("$nbs"/[0-9][0-9]_*.ipynb)

start=$(date +%s)
if ! finetune-book build "${chapters[@]}" --profile "$profile"; then
    echo "gpu_check: stopped at the first failing chapter (above); the ones before it are stamped in $nbs" >&2
    exit 1
fi
finetune-book build --check "${chapters[@]}"
echo "gpu_check: $profile profile, ${#chapters[@]} chapters, $(( $(date +%s) - start )) s in all; pages in $nbs"
