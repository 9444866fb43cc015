#!/bin/bash
# GEMM device run: tests, sanitizer, SASS check, bench (+tune). Logs under $OUT.
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1
nvidia-smi -L
STAGE=${STAGE:-all}
t0=$(date +%s)
echo "== tests"; GEMM_EXAMPLES=${GEMM_EXAMPLES:-12} HYPOTHESIS_PROFILE=gpu timeout ${T_TEST:-140} python3 -m pytest -m gpu tests/test_gemm.py -q -x -p no:cacheprovider > $OUT/tests.log 2>&1; echo "rc=$?"; tail -25 $OUT/tests.log
echo "t=$(( $(date +%s) - t0 ))"
cat > /tmp/small.py <<'PY'
import torch, sys
sys.path.insert(0, "tests")
from test_gemm import _check_fp8, _check_bf16
from jitkern.heuristics import GemmConfig as G
_check_fp8(77, 136, 272, 1); _check_fp8(130, 256, 512, 2, accum=True); _check_bf16(65, 144, 200, 3)
_check_fp8(300, 2112, 1536, 4, config=G(128, 128, 5, 16, 132, 2, 1)); _check_fp8(70, 1040, 512, 5, config=G(64, 96, 8, 16, 132, 1, 2))
_check_bf16(300, 576, 520, 6, config=G(128, 96, 4, 16, 132, 2, 1))
torch.cuda.synchronize(); print("small ok")
PY
for tool in ${SAN_TOOLS:-memcheck}; do echo "== sanitizer $tool"; timeout ${T_SAN:-70} compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 /tmp/small.py > $OUT/san_$tool.log 2>&1; echo "rc=$?"; tail -6 $OUT/san_$tool.log; done
echo "t=$(( $(date +%s) - t0 ))"
echo "== sass"; python3 - > $OUT/sass.log 2>&1 <<'PY'
import glob, json, subprocess, collections
want = ("<true, 7168, 2048, 128, 128, 5, 16, false, 2, 1>", "<false, 7168, 2048, 128, 256, 3, 16, false, 1, 1>",
        "<true, 2112, 7168, 64, 16,")
for f in sorted(glob.glob(".jitkern-cache/*/*.json")):
    n = json.load(open(f))["name"]
    if any(w in n for w in want):
        sass = subprocess.run(["cuobjdump", "-sass", f[:-5] + ".cubin"], capture_output=True, text=True).stdout
        c = collections.Counter(t.split()[0] for t in sass.split("\n") for t in [t.split(";")[0].split("*/")[-1].strip()] if t.startswith(("QGMMA", "HGMMA", "LDL", "STL", "UTMA", "STSM")))
        print(n, dict(c))
PY
cat $OUT/sass.log | head -12
echo "t=$(( $(date +%s) - t0 ))"
if [ -n "$TUNE" ]; then echo "== tune"; timeout ${T_TUNE:-200} python3 -m jitkern.cli bench gemm --tune --json $OUT/tune.json > $OUT/tune.log 2>&1; echo "rc=$?"; tail -4 $OUT/tune.log; cp tuning/gemm_h100.json $OUT/; fi
echo "t=$(( $(date +%s) - t0 ))"
echo "== bench"; timeout ${T_BENCH:-180} python3 -m jitkern.cli bench gemm --json $OUT/bench.json ${BENCH_ARGS} > $OUT/bench.log 2>&1; echo "rc=$?"; tail -26 $OUT/bench.log
echo "t=$(( $(date +%s) - t0 ))"
