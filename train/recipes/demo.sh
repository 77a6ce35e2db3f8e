#!/usr/bin/env bash
# Reproduces the demo pair shipped in demo/: a ~8M-parameter Llama-style target
# trained on the Python standard library's source, and a ~0.9M-parameter draft
# distilled from the shipped target (same tokenizer), and Medusa and Hydra++ heads and an EAGLE
# drafter for the target. About 50 + 15 + 20 + 20 + 35 minutes on 2 CPU cores. Re-running resumes from the last checkpoint in $WORK.
#
#   bash train/recipes/demo.sh            # from the repository root, venv active
set -euo pipefail

WORK=${WORK:-runs/demo}   # tokenizer, packed data, checkpoints and metrics (not committed)
OUT=${OUT:-demo}          # the shipped Hugging Face directories

jaxspec-train tokenizer --vocab-size 4096 --out "$WORK/tokenizer"
jaxspec-train data --tokenizer "$WORK/tokenizer" --seq-len 256 --out "$WORK/data"

jaxspec-train lm --data "$WORK/data" --out "$WORK/target" --export "$OUT/target" --export-dtype bfloat16 \
  --hidden 256 --layers 8 --heads 8 --kv-heads 4 --intermediate 704 \
  --steps 450 --batch-size 16 --lr 2e-3 --warmup 30 --z-loss 1e-4 \
  --save-every 50 --keep 2 --eval-every 150 --eval-batches 4

# The teacher is the shipped (bfloat16-rounded) target, so the draft matches what users load.
jaxspec-train distill --teacher "$OUT/target" --data "$WORK/data" --out "$WORK/draft" --export "$OUT/draft" --export-dtype bfloat16 \
  --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 352 --tie-embeddings \
  --steps 400 --batch-size 16 --lr 3e-3 --warmup 30 --z-loss 1e-4 \
  --save-every 50 --keep 2 --eval-every 150 --eval-batches 4

# Medusa heads on the shipped target: three heads, one ResBlock each, projecting through its head.
jaxspec-train heads --model "$OUT/target" --data "$WORK/data" --out "$WORK/heads" --export "$OUT/heads" \
  --num-heads 3 --steps 1200 --batch-size 8 --lr 3e-3 --warmup 30 \
  --save-every 200 --keep 2 --eval-every 400 --eval-batches 8

# Hydra++ heads on the shipped target: three sequentially dependent heads of two blocks each, after a
# prefix-attention layer over the target's hidden states (models/hydra.py).
jaxspec-train heads --kind hydra --prefix-attention --model "$OUT/target" --data "$WORK/data" --out "$WORK/hydra" \
  --export "$OUT/hydra" --num-heads 3 --num-layers 2 --steps 1200 --batch-size 8 --lr 3e-3 --warmup 30 \
  --save-every 200 --keep 2 --eval-every 400 --eval-batches 8

# An EAGLE drafter on the shipped target: one decoder layer over [token embedding, target feature],
# trained through 4 unrolled drafting steps (models/eagle.py); it drafts EAGLE-2's dynamic tree.
jaxspec-train heads --kind eagle --model "$OUT/target" --data "$WORK/data" --out "$WORK/eagle" \
  --export "$OUT/eagle" --num-heads 4 --steps 1000 --batch-size 8 --lr 3e-3 --warmup 30 \
  --save-every 200 --keep 2 --eval-every 500 --eval-batches 8

jaxspec-train plot "$WORK/target/metrics.jsonl=target" "$WORK/draft/metrics.jsonl=draft" --out docs/img/demo_loss.png
