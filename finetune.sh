#!/usr/bin/env bash
# LoRA / QLoRA fine-tuning of any model family this toolkit loads (VisualGLM-6B, Qwen2.5-VL, GLM-4.1V, ...),
# chosen from MODEL_DIR itself. With no settings: the tiny VisualGLM on the bundled sample (CPU, about
# a minute), then a greedy answer of the base and the new checkpoint, scored. Defaults in [] are the
# family's recipe (`python -m remoteglm recipe MODEL_DIR` prints them).
#
# Settings (environment variables; extra arguments go straight to finetune_visualglm.py):
#   MODEL_DIR     base model folder (any family)             [checkpoints/visualglm-tiny, created if missing]
#                 (each family's tiny folder - checkpoints/qwen2.5-vl-tiny, checkpoints/glm4.1v-tiny, ... - too)
#   TRAIN_DATA    fine-tune JSON or dataset_*_zh.json        [data/sample/sample_train.json]
#   VALID_DATA    held-out JSON for the eval loss ('' = none) [X_val.json beside X_train.json, if there is one]
#   SAVE_DIR      where run folders go (and LAST_RUN)         [checkpoints]
#   SAVE_INTERVAL checkpoint every N steps                    [100 or TRAIN_ITERS if smaller]
#   KEEP_CHECKPOINTS  complete step folders kept (0 = all)    [2]
#   NUM_GPUS      GPUs per machine (deepspeed launcher)       [all visible; 0 = CPU]
#   HOSTFILE      DeepSpeed hostfile for several machines ("host slots=N" lines) [none]
#   MASTER_ADDR / MASTER_PORT   rendezvous of the ranks       [127.0.0.1 / a free port; with HOSTFILE: its first host / 29500]
#   QLORA=1       NF4-quantised base (QLoRA)                 [0]
#   LORA_RANK     LoRA rank                                   [VisualGLM 10; transformers families 8]
#   LORA_ALPHA    LoRA alpha (scale = alpha/rank)             [VisualGLM 1 (official), its tiny one = rank; others 2 x rank]
#   LAYER_RANGE   ChatGLM layer indices, e.g. "0 14"          [all layers]
#   TRAIN_ITERS   optimizer steps                             [300; tiny transformers models 150]
#   BATCH_SIZE    micro-batch per GPU                         [VisualGLM 4; others 1 (their tiny ones: 4)]
#   VRAM          the card's memory in GiB (12, 16, 24, ...): the largest max_pixels and BATCH_SIZE that fit
#                 (a BATCH_SIZE you set wins); `bash finetune.sh --plan_only` prints the table and stops [unset]
#   LR            peak learning rate                          [1e-4; tiny models 1e-2]
#   MAX_SOURCE_LEN / MAX_TARGET_LEN   prompt text / answer tokens (image slots extra) [128 / 256]
#   DEMO_IMAGE    image for the closing chat answer           [data/sample/images/s2_farmland.png; tiny transformers models: SOAP_031.png]
#   DRY_RUN=1     print the training command and stop
#
# Resume a killed run: the same command plus `--resume RUN_FOLDER` (finetune_visualglm.py checks it first).
set -euo pipefail
cd "$(dirname "$0")"

MODEL_DIR=${MODEL_DIR:-checkpoints/visualglm-tiny}
TRAIN_DATA=${TRAIN_DATA:-data/sample/sample_train.json}
SAVE_DIR=${SAVE_DIR:-checkpoints}
QLORA=${QLORA:-0}
LAYER_RANGE=${LAYER_RANGE:-}
HOSTFILE=${HOSTFILE:-}
MAX_SOURCE_LEN=${MAX_SOURCE_LEN:-128}
MAX_TARGET_LEN=${MAX_TARGET_LEN:-256}
KEEP_CHECKPOINTS=${KEEP_CHECKPOINTS:-2}

# The defaults come from the folder's family (remoteglm/families/): which family loads MODEL_DIR
# (a folder none can load is its one error line, before anything starts), its recipe, and its tiny
# model made on first use when MODEL_DIR is the family's tiny folder.
recipe_args=("$MODEL_DIR" --train_data $TRAIN_DATA)
[[ -n "${LORA_RANK:-}" ]] && recipe_args+=(--lora_rank "$LORA_RANK")
[[ "${DRY_RUN:-0}" != 1 ]] && recipe_args+=(--make_tiny)
recipe=$(python -m remoteglm recipe "${recipe_args[@]}") || exit 2
eval "$recipe"
TRAIN_ITERS=${TRAIN_ITERS:-$RECIPE_TRAIN_ITERS}
USER_BATCH_SIZE=${BATCH_SIZE:-}
BATCH_SIZE=${BATCH_SIZE:-$RECIPE_BATCH_SIZE}
LR=${LR:-$RECIPE_LR}
LORA_RANK=${LORA_RANK:-$RECIPE_LORA_RANK}
LORA_ALPHA=${LORA_ALPHA:-$RECIPE_LORA_ALPHA}
VALID_DATA=${VALID_DATA-$RECIPE_VALID_DATA}
DEMO_IMAGE=${DEMO_IMAGE:-$RECIPE_DEMO_IMAGE}
[[ -n "$RECIPE_THREADS" ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$RECIPE_THREADS}
SAVE_INTERVAL=${SAVE_INTERVAL:-}

# with a card size (VRAM or --vram) the planner picks the batch, unless BATCH_SIZE was set
planned=0; plan_only=0
[[ -n "${VRAM:-}" ]] && planned=1
for a in "$@"; do
  [[ "$a" == --vram || "$a" == --vram=* ]] && planned=1
  [[ "$a" == --plan_only ]] && plan_only=1
done
args=(--from_pretrained "$MODEL_DIR" --train_data $TRAIN_DATA --save "$SAVE_DIR"
      --train_iters "$TRAIN_ITERS" --lr "$LR" --lora_rank "$LORA_RANK" --lora_alpha "$LORA_ALPHA"
      --max_source_length "$MAX_SOURCE_LEN" --max_target_length "$MAX_TARGET_LEN" --keep_checkpoints "$KEEP_CHECKPOINTS")
[[ "$planned" == 0 || -n "$USER_BATCH_SIZE" ]] && args+=(--batch_size "$BATCH_SIZE")
[[ -n "${VRAM:-}" ]] && args+=(--vram "$VRAM")
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

if [[ "$plan_only" == 1 ]]; then  # the memory table only: no launcher, no demo
  exec python finetune_visualglm.py "${args[@]}" "$@"
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${launch[@]}" "${args[@]}" "$@"; echo
  exit 0
fi
echo ">> fine-tuning $MODEL_DIR ($RECIPE_FAMILY_LABEL) on $TRAIN_DATA ($TRAIN_ITERS steps, $where)"
"${launch[@]}" "${args[@]}" "$@"

RUN_DIR=$(cat "$SAVE_DIR/LAST_RUN")
echo ">> asking the base model and the new checkpoint about $DEMO_IMAGE (greedy), scored against its training labels"
python -m remoteglm.eval.demo --base "$MODEL_DIR" --run "$RUN_DIR" --image "$DEMO_IMAGE" --train_data $TRAIN_DATA < /dev/null
echo ">> done. Chat with it: python cli_demo.py --from_pretrained $RUN_DIR"
