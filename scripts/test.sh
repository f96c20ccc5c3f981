#!/usr/bin/env bash
# The test command of README and CI. Installs what the suite needs and pip cannot give (Debian's
# Chromium, its driver and a CJK font for the browser tests), then the Python pins, then runs
# pytest. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k quant`).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
fc-list 2>/dev/null | grep -qi wqy || need+=(fonts-wqy-microhei)
if ((${#need[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo ">> installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq "${need[@]}" fontconfig >/dev/null
fi
PY=${PYTHON:-python}
"$PY" -m pip install -q -r requirements.txt
exec "$PY" -m pytest -q tests "$@"
