#!/usr/bin/env bash
# The Python packages benchmarks/gpu_check.py needs that the GPU machine lacks, as wheels for its
# Python 3.12 on x86-64 Linux, into .whl/ in the repository root. Run it here (it needs PyPI); the
# device run carries the folder (`carry: [".whl"]`) and installs it offline, see gpu_check.py's docstring.
#
# .whl/ is git-ignored through .git/info/exclude (this script adds the line) and never committed.
#
# What the machine lacks (its package list, /work/.library/device/KINDS.md): sat itself, DeepSpeed,
# bitsandbytes, jieba, and of their imports hjson and pydantic (DeepSpeed), tensorboardX and datasets
# with dill and multiprocess (sat.training imports them at start). sat's other requirements
# (boto3, webdataset, cpm_kernels) are imported only if present: left out. typing-extensions comes
# along because pydantic needs >= 4.14.1 and the machine's version is not on its list.
#
# - deepspeed 0.19.8 and jieba 0.42.1 exist on PyPI only as source: they are built here into
#   pure-Python wheels (DS_BUILD_OPS=0: no compiled ops; the fine-tune uses torch's AdamW, so
#   nothing is JIT-built there either). Building DeepSpeed offline on the device would also work
#   (it has torch, setuptools and ninja) but costs device time; the wheel built here has no .so in it.
# - bitsandbytes 0.50.2's wheel (43 MB) holds one library per CUDA/ROCm/XPU version; with the rest
#   it would not fit the 64 MiB a device call carries. It is repacked keeping the CPU library and the
#   CUDA 13 ones (the device's torch is cu130); RECORD is rewritten to match.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT=$((64 * 1024 * 1024))

exclude=.git/info/exclude
[[ -d .git ]] || exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

rm -rf .whl
mkdir -p .whl
TAGS=(--python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
BINARY=(SwissArmyTransformer==0.4.6 bitsandbytes==0.50.2
        hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        typing-extensions==4.16.0 tensorboardX==2.6.5 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        transformers==5.23.0 peft==0.21.2)  # the machine has transformers 5.17: the transformers engine (vlm_bench.py) is pinned to 5.23
SOURCE=(deepspeed==0.19.8 jieba==0.42.1)

echo ">> wheels from PyPI (Python 3.12, manylinux x86-64)"
"$PY" -m pip download -q --no-deps --only-binary=:all: "${TAGS[@]}" -d .whl "${BINARY[@]}"
echo ">> building pure-Python wheels from source: ${SOURCE[*]}"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-cache-dir --no-deps --no-build-isolation -w .whl "${SOURCE[@]}"

echo ">> bitsandbytes: keeping the CPU and CUDA 13 libraries"
"$PY" - <<'EOF'
import glob, hashlib, os, re, zipfile
src = glob.glob(".whl/bitsandbytes-*.whl")[0]
drop = re.compile(r"^bitsandbytes/libbitsandbytes_(?!cpu\.so$|cuda13\d\.so$)[^/]+\.so$")
tmp = src + ".tmp"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    names = [n for n in zin.namelist() if not drop.match(n)]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    for n in names:
        if n == record:
            rows = [r for r in zin.read(n).decode().splitlines() if r and not drop.match(r.split(",")[0])]
            zout.writestr(zin.getinfo(n), "\n".join(rows) + "\n")
        else:
            zout.writestr(zin.getinfo(n), zin.read(n))
    kept = sorted(n for n in names if n.endswith(".so"))
os.replace(tmp, src)
print("   kept", ", ".join(os.path.basename(k) for k in kept))
EOF

echo ">> checking that pip takes them for the device's Python 3.12 (install into a scratch folder)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --only-binary=:all: "${TAGS[@]}" --target "$scratch" .whl/*.whl
for n in sat deepspeed bitsandbytes jieba hjson pydantic pydantic_core tensorboardX datasets dill multiprocess transformers peft; do
  [[ -d "$scratch/$n" ]] || { echo "missing after install: $n" >&2; exit 1; }
done

ls -l .whl | awk 'NR > 1 {printf "   %10d  %s\n", $5, $9}'
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
echo ">> wheels $((wheels / 1024)) KiB + working tree $((tree / 1024)) KiB = $(((wheels + tree) / 1024)) KiB of the $((LIMIT / 1024)) KiB a call carries"
if ((wheels + tree > LIMIT)); then
  echo "too large for one device call" >&2
  exit 1
fi
