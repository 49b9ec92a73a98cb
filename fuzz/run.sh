#!/bin/sh
# Long fuzzing run: fuzz/run.sh [seconds per target, default 600] [targets...]
# Each target runs under libFuzzer (atheris) from its seed corpus tests/corpus/<target>,
# writing new inputs to ${FUZZ_WORK:-/tmp/e2e-fuzz}/<target> and any crash to
# ${FUZZ_WORK}/crash-<target>-*; the final stats go to ${FUZZ_WORK}/<target>.log.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-frame bundle decrypt state}
work=${FUZZ_WORK:-/tmp/e2e-fuzz}
py=${PYTHON:-python}
for t in $targets; do
  mkdir -p "$work/$t"
  $py "fuzz/fuzz_$t.py" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/crash-$t-" "$work/$t" "tests/corpus/$t" \
    >"$work/$t.log" 2>&1 || echo "FAILED: $t (see $work/$t.log)"
  grep -E "stat::number_of_executed_units|Done|ERROR|Exception" "$work/$t.log" || true
done
