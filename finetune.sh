#!/usr/bin/env bash
# LoRA / QLoRA fine-tuning of VisualGLM-6B. With no settings: the tiny model on the bundled sample
# (CPU, about a minute), then one chat answer from the new checkpoint.
#
# Settings (environment variables; extra arguments go straight to finetune_visualglm.py):
#   MODEL_DIR     base checkpoint folder, sat or HF format   [checkpoints/visualglm-tiny, created if missing]
#   TRAIN_DATA    fine-tune JSON or dataset_*_zh.json        [data/sample/sample_train.json]
#   VALID_DATA    held-out JSON for the eval loss ('' = none) [data/sample/sample_val.json]
#   SAVE_DIR      where run folders go                       [checkpoints]
#   NUM_GPUS      GPUs to use (deepspeed launcher)           [all visible; 0 = CPU]
#   QLORA=1       NF4-quantised base (QLoRA)                 [0]
#   LORA_RANK     LoRA rank                                   [10]
#   LORA_ALPHA    LoRA alpha (scale = alpha/rank)             [1, official; tiny default = rank]
#   LAYER_RANGE   ChatGLM layer indices, e.g. "0 14"          [all layers]
#   TRAIN_ITERS   optimizer steps                             [300]
#   BATCH_SIZE    micro-batch per GPU                         [4]
#   LR            peak learning rate                          [1e-4; tiny default 1e-2]
#   MAX_SOURCE_LEN / MAX_TARGET_LEN   prompt text / answer tokens (image slots extra) [128 / 256]
#   DEMO_IMAGE    image for the closing chat answer           [data/sample/images/s2_farmland.png]
set -euo pipefail
cd "$(dirname "$0")"

TINY_DIR=checkpoints/visualglm-tiny
MODEL_DIR=${MODEL_DIR:-$TINY_DIR}
TRAIN_DATA=${TRAIN_DATA:-data/sample/sample_train.json}
VALID_DATA=${VALID_DATA-data/sample/sample_val.json}
SAVE_DIR=${SAVE_DIR:-checkpoints}
QLORA=${QLORA:-0}
LORA_RANK=${LORA_RANK:-10}
LAYER_RANGE=${LAYER_RANGE:-}
BATCH_SIZE=${BATCH_SIZE:-4}
MAX_SOURCE_LEN=${MAX_SOURCE_LEN:-128}
MAX_TARGET_LEN=${MAX_TARGET_LEN:-256}
DEMO_IMAGE=${DEMO_IMAGE:-data/sample/images/s2_farmland.png}

if [[ "$MODEL_DIR" == "$TINY_DIR" ]]; then
  # The tiny model is random: it needs a far higher learning rate to learn anything in a minute.
  TRAIN_ITERS=${TRAIN_ITERS:-300}
  LR=${LR:-1e-2}
  LORA_ALPHA=${LORA_ALPHA:-$LORA_RANK}
  if [[ ! -f "$TINY_DIR/latest" ]]; then
    echo ">> creating the tiny VisualGLM checkpoint in $TINY_DIR (random weights, for trying the pipeline)"
    python -m remoteglm.model.tiny "$TINY_DIR"
  fi
else
  TRAIN_ITERS=${TRAIN_ITERS:-300}
  LR=${LR:-1e-4}
  LORA_ALPHA=${LORA_ALPHA:-1}
fi

GPUS_SEEN=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
NUM_GPUS=${NUM_GPUS:-$GPUS_SEEN}

args=(--from_pretrained "$MODEL_DIR" --train_data $TRAIN_DATA --save "$SAVE_DIR"
      --train_iters "$TRAIN_ITERS" --batch_size "$BATCH_SIZE" --lr "$LR" --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA"
      --max_source_length "$MAX_SOURCE_LEN" --max_target_length "$MAX_TARGET_LEN")
[[ -n "$VALID_DATA" ]] && args+=(--valid_data $VALID_DATA --eval_interval $(( TRAIN_ITERS / 2 > 0 ? TRAIN_ITERS / 2 : 1 )) --eval_iters 4)
[[ -n "$LAYER_RANGE" ]] && args+=(--layer_range $LAYER_RANGE)
[[ "$QLORA" == 1 ]] && args+=(--use_qlora)

echo ">> fine-tuning $MODEL_DIR on $TRAIN_DATA ($TRAIN_ITERS steps, $([[ $NUM_GPUS -gt 0 ]] && echo "$NUM_GPUS GPU(s)" || echo CPU))"
if [[ "$NUM_GPUS" -gt 0 ]]; then
  MASTER_PORT=${MASTER_PORT:-$(python -c "from remoteglm.compat import free_port; print(free_port())")}
  deepspeed --master_addr 127.0.0.1 --master_port "$MASTER_PORT" --num_gpus "$NUM_GPUS" --no_local_rank \
    finetune_visualglm.py "${args[@]}" "$@"
else
  python finetune_visualglm.py "${args[@]}" "$@"
fi

RUN_DIR=$(cat "$SAVE_DIR/LAST_RUN")
echo ">> asking the base model and the new checkpoint about $DEMO_IMAGE (greedy), scored against its training labels"
python -m remoteglm.train.demo --base "$MODEL_DIR" --run "$RUN_DIR" --image "$DEMO_IMAGE" --train_data $TRAIN_DATA < /dev/null
echo ">> done. Chat with it: python cli_demo.py --from_pretrained $RUN_DIR"
