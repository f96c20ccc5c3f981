#!/usr/bin/env bash
# LoRA / QLoRA fine-tuning of VisualGLM-6B - or of GLM-4.1V / Qwen2.5-VL when MODEL_DIR is one of
# their HF folders (the transformers engine, chosen from its config.json). With no settings: the tiny model on the bundled sample
# (CPU, about two minutes), then a greedy answer of the base and the new checkpoint, scored.
#
# Settings (environment variables; extra arguments go straight to finetune_visualglm.py):
#   MODEL_DIR     base checkpoint folder, sat or HF format   [checkpoints/visualglm-tiny, created if missing]
#                 (checkpoints/qwen2.5-vl-tiny and checkpoints/glm4.1v-tiny are also created if missing)
#   TRAIN_DATA    fine-tune JSON or dataset_*_zh.json        [data/sample/sample_train.json]
#   VALID_DATA    held-out JSON for the eval loss ('' = none) [tiny: the sample's; else X_val.json beside X_train.json]
#   SAVE_DIR      where run folders go (and LAST_RUN)         [checkpoints]
#   SAVE_INTERVAL checkpoint every N steps                    [100 or TRAIN_ITERS if smaller]
#   KEEP_CHECKPOINTS  complete step folders kept (0 = all)    [2]
#   NUM_GPUS      GPUs per machine (deepspeed launcher)       [all visible; 0 = CPU]
#   HOSTFILE      DeepSpeed hostfile for several machines ("host slots=N" lines) [none]
#   MASTER_ADDR / MASTER_PORT   rendezvous of the ranks       [127.0.0.1 / a free port; with HOSTFILE: its first host / 29500]
#   QLORA=1       NF4-quantised base (QLoRA)                 [0]
#   LORA_RANK     LoRA rank                                   [10; GLM-4.1V / Qwen2.5-VL: 8]
#   LORA_ALPHA    LoRA alpha (scale = alpha/rank)             [1, official; tiny default = rank; GLM-4.1V / Qwen2.5-VL: 2 x rank]
#   LAYER_RANGE   ChatGLM layer indices, e.g. "0 14"          [all layers]
#   TRAIN_ITERS   optimizer steps                             [300]
#   BATCH_SIZE    micro-batch per GPU                         [4; GLM-4.1V / Qwen2.5-VL: 1 (their tiny ones: 4)]
#   LR            peak learning rate                          [1e-4; tiny default 1e-2]
#   MAX_SOURCE_LEN / MAX_TARGET_LEN   prompt text / answer tokens (image slots extra) [128 / 256]
#   DEMO_IMAGE    image for the closing chat answer           [data/sample/images/s2_farmland.png; tiny VLMs: SOAP_031.png]
#   DRY_RUN=1     print the training command and stop
#
# Resume a killed run: the same command plus `--resume RUN_FOLDER` (finetune_visualglm.py checks it first).
set -euo pipefail
cd "$(dirname "$0")"

TINY_DIR=checkpoints/visualglm-tiny
MODEL_DIR=${MODEL_DIR:-$TINY_DIR}
TRAIN_DATA=${TRAIN_DATA:-data/sample/sample_train.json}
SAVE_DIR=${SAVE_DIR:-checkpoints}
QLORA=${QLORA:-0}
LAYER_RANGE=${LAYER_RANGE:-}
case "$MODEL_DIR" in  # the tiny transformers-engine models, made on first use like the VisualGLM one
  checkpoints/qwen2.5-vl-tiny) TINY_VLM=qwen2_5_vl ;;
  checkpoints/glm4.1v-tiny) TINY_VLM=glm4v ;;
  *) TINY_VLM="" ;;
esac
if [[ -n "$TINY_VLM" && ! -f "$MODEL_DIR/config.json" && "${DRY_RUN:-0}" != 1 ]]; then
  echo ">> creating the tiny $TINY_VLM model in $MODEL_DIR (briefly pre-trained on the sample captions, for trying the pipeline)"
  python -m remoteglm.model.vlm_tiny "$TINY_VLM" "$MODEL_DIR"
fi
if [[ -n "$TINY_VLM" ]]; then
  ENGINE=transformers
elif [[ "$MODEL_DIR" == "$TINY_DIR" ]]; then
  ENGINE=visualglm  # made below on first use
else  # which engine loads the folder; a folder none can load is its one error line, before anything starts
  ENGINE=$(python -m remoteglm.serve.loading "$MODEL_DIR") || exit 2
fi
if [[ "$ENGINE" == transformers ]]; then
  LORA_RANK=${LORA_RANK:-8}
  if [[ -n "$TINY_VLM" ]]; then BATCH_SIZE=${BATCH_SIZE:-4}; else BATCH_SIZE=${BATCH_SIZE:-1}; fi
else
  LORA_RANK=${LORA_RANK:-10}
  BATCH_SIZE=${BATCH_SIZE:-4}
fi
MAX_SOURCE_LEN=${MAX_SOURCE_LEN:-128}
MAX_TARGET_LEN=${MAX_TARGET_LEN:-256}
KEEP_CHECKPOINTS=${KEEP_CHECKPOINTS:-2}
DEMO_IMAGE_SET=${DEMO_IMAGE:-}
DEMO_IMAGE=${DEMO_IMAGE:-data/sample/images/s2_farmland.png}
HOSTFILE=${HOSTFILE:-}

if [[ "$MODEL_DIR" == "$TINY_DIR" ]]; then
  # The tiny model stands in for a pretrained one: it needs a far higher learning rate to learn in a minute.
  TRAIN_ITERS=${TRAIN_ITERS:-300}
  LR=${LR:-1e-2}
  LORA_ALPHA=${LORA_ALPHA:-$LORA_RANK}
  VALID_DATA=${VALID_DATA-data/sample/sample_val.json}
  # tiny tensors: a second OpenMP thread only fights the first over the cores (2-4x slower on 2 cores)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  if [[ ! -f "$TINY_DIR/latest" && "${DRY_RUN:-0}" != 1 ]]; then
    echo ">> creating the tiny VisualGLM checkpoint in $TINY_DIR (briefly pre-trained on the sample captions, for trying the pipeline)"
    python -m remoteglm.model.tiny "$TINY_DIR"
  fi
elif [[ -n "$TINY_VLM" ]]; then
  # their text-only pre-training makes the base answer every image with a farmland caption: ask about another one
  DEMO_IMAGE=${DEMO_IMAGE_SET:-data/sample/images/SOAP_031.png}
  TRAIN_ITERS=${TRAIN_ITERS:-150}
  LR=${LR:-1e-2}
  LORA_ALPHA=${LORA_ALPHA:-$((2 * LORA_RANK))}
  VALID_DATA=${VALID_DATA-data/sample/sample_val.json}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  TRAIN_ITERS=${TRAIN_ITERS:-300}
  LR=${LR:-1e-4}
  if [[ "$ENGINE" == transformers ]]; then LORA_ALPHA=${LORA_ALPHA:-$((2 * LORA_RANK))}; else LORA_ALPHA=${LORA_ALPHA:-1}; fi
  # the held-out split beside the training file (data/ucm_zh/ucm_train.json -> ucm_val.json), if there is one
  guess=""
  [[ "$TRAIN_DATA" == *_train.json && -f "${TRAIN_DATA%_train.json}_val.json" ]] && guess="${TRAIN_DATA%_train.json}_val.json"
  VALID_DATA=${VALID_DATA-$guess}
fi
SAVE_INTERVAL=${SAVE_INTERVAL:-}

args=(--from_pretrained "$MODEL_DIR" --train_data $TRAIN_DATA --save "$SAVE_DIR"
      --train_iters "$TRAIN_ITERS" --batch_size "$BATCH_SIZE" --lr "$LR" --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA"
      --max_source_length "$MAX_SOURCE_LEN" --max_target_length "$MAX_TARGET_LEN" --keep_checkpoints "$KEEP_CHECKPOINTS")
[[ -n "$VALID_DATA" ]] && args+=(--valid_data $VALID_DATA --eval_iters 4)
[[ -n "$SAVE_INTERVAL" ]] && args+=(--save_interval "$SAVE_INTERVAL")
[[ -n "$LAYER_RANGE" ]] && args+=(--layer_range $LAYER_RANGE)
[[ "$QLORA" == 1 ]] && args+=(--use_qlora)

launch=()
if [[ -n "$HOSTFILE" ]]; then
  [[ -f "$HOSTFILE" ]] || { echo "error: HOSTFILE=$HOSTFILE does not exist (lines like 'node1 slots=8')" >&2; exit 2; }
  first_host=$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")
  [[ -n "$first_host" ]] || { echo "error: HOSTFILE=$HOSTFILE names no host (lines like 'node1 slots=8')" >&2; exit 2; }
  # every node must reach the first one: the rendezvous listens on the network here, not on loopback
  MASTER_ADDR=${MASTER_ADDR:-$first_host}
  MASTER_PORT=${MASTER_PORT:-29500}
  launch=(python -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
  [[ -n "${NUM_GPUS:-}" ]] && launch+=(--num_gpus "$NUM_GPUS")
  launch+=(--no_local_rank finetune_visualglm.py)
  where="the machines in $HOSTFILE"
else
  GPUS_SEEN=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  NUM_GPUS=${NUM_GPUS:-$GPUS_SEEN}
  if [[ "$NUM_GPUS" =~ ^[0-9]+$ && "$NUM_GPUS" -gt 0 ]]; then
    MASTER_PORT=${MASTER_PORT:-$(python -c "from remoteglm.compat import free_port; print(free_port())")}
    launch=(python -m deepspeed.launcher.runner --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "$MASTER_PORT"
            --num_gpus "$NUM_GPUS" --no_local_rank finetune_visualglm.py)
    where="$NUM_GPUS GPU(s)"
  elif [[ "$NUM_GPUS" == 0 ]]; then
    launch=(python finetune_visualglm.py)
    where="CPU"
  else
    echo "error: NUM_GPUS=$NUM_GPUS is not a number of GPUs (0 = CPU)" >&2; exit 2
  fi
fi

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${launch[@]}" "${args[@]}" "$@"; echo
  exit 0
fi
echo ">> fine-tuning $MODEL_DIR on $TRAIN_DATA ($TRAIN_ITERS steps, $where, $ENGINE engine)"
"${launch[@]}" "${args[@]}" "$@"

RUN_DIR=$(cat "$SAVE_DIR/LAST_RUN")
echo ">> asking the base model and the new checkpoint about $DEMO_IMAGE (greedy), scored against its training labels"
python -m remoteglm.train.demo --base "$MODEL_DIR" --run "$RUN_DIR" --image "$DEMO_IMAGE" --train_data $TRAIN_DATA < /dev/null
echo ">> done. Chat with it: python cli_demo.py --from_pretrained $RUN_DIR"
