# Speculative markov/greedy device run (source scripts/device_env.sh first): pre-compile the
# kernels in parallel, GPU tests, bench, compute-sanitizer on the small cases. Logs under $OUT.
# Budgets (seconds) via T_TEST, T_BENCH, T_SAN; BENCH_KINDS (default markov,greedy).
python3 - <<'PY' > $OUT/warm.log 2>&1
import itertools, torch
from concurrent.futures import ProcessPoolExecutor
from jitkern.ops import speculative as ops
from jitkern.runtime import compile_spec
specs = []
for dt, tk, r, sampled, vec in itertools.product((torch.bfloat16, torch.float32), (torch.int64, torch.int32),
                                                 (64, 128, 256), (False, True), (True, False)):
    for mt in sorted({ops.markov_mtiles(b, r) for b in (1, 32, 64)}):
        specs.append(ops.markov_spec(dt, tk, r, sampled, mt, vec))
for dt in (torch.bfloat16, torch.float32):
    for vec in (True, False):
        specs.append(ops.greedy_spec(dt, torch.int64, torch.int32, vec))
    specs.append(ops.greedy_stream_spec(dt, torch.int64, torch.int32))
    specs.append(ops.greedy_stream_spec(dt, torch.int32, torch.int32))
def one(s):
    try:
        e, st = compile_spec(s, "sm_90a"); return f"{st} {e.meta['ptxas']} {s.name}"
    except Exception as ex:
        return f"FAILED {s.name} {ex}"
with ProcessPoolExecutor(16) as ex:
    for line in ex.map(one, specs): print(line)
PY
echo "warm: $(grep -c . $OUT/warm.log) specs, $(grep -c FAILED $OUT/warm.log) failed"
HYPOTHESIS_PROFILE=gpu timeout ${T_TEST:-100} python3 -m pytest -m gpu -q -p no:cacheprovider -rfE \
  tests/test_speculative_markov.py tests/test_speculative_small.py tests/test_speculative.py -k "${TEST_K:-markov or greedy}" > $OUT/tests.log 2>&1
echo "tests rc=$?"; tail -4 $OUT/tests.log
timeout ${T_BENCH:-90} python3 -m jitkern.cli bench spec --kinds ${BENCH_KINDS:-markov,greedy} \
  --cases ${BENCH_CASES:-1x7,64x7,256x3} --json $OUT/bench.json > $OUT/bench.log 2>&1
echo "bench rc=$?"; grep -E "markov|greedy" $OUT/bench.log | cut -c1-150
if [ -n "$PROFILE" ] && command -v ncu >/dev/null; then
  timeout ${T_PROF:-60} ncu --kernel-name regex:markov --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section SchedulerStats --section InstructionStats python3 scripts/markov_profile.py $PROFILE \
    > $OUT/ncu.log 2>&1; echo "ncu rc=$?"; grep -E "Duration|Throughput|Stall|Issue|Warp Cycles|Eligible|Executed Ipc|No Eligible" $OUT/ncu.log | head -30
fi
for tool in memcheck racecheck; do
  timeout ${T_SAN:-40} compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 -m pytest -m gpu -q \
    -p no:cacheprovider tests/test_speculative_markov.py -k small > $OUT/san_$tool.log 2>&1
  echo "$tool rc=$?"; tail -3 $OUT/san_$tool.log
done
