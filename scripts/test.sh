#!/usr/bin/env bash
# Runs every test of hicache-valkey on a fresh machine: installs what is missing (valkey-server
# 8.x from bookworm-backports, cmake, valgrind, shellcheck, cargo-nextest, the SGLang test venv),
# then, each step running even when an earlier one failed:
#   1. shellcheck of scripts/*.sh and .ci/run;
#   2. cargo tests (cargo nextest, --no-fail-fast: every test binary runs): unit, property and
#      integration tests against throwaway valkey-servers, and the check that
#      include/hicache_valkey.h is what cbindgen generates from the source;
#   3. the C tests (scripts/ctest.sh: ctest through the installed CMake package, plain, under
#      ASan+UBSan and under valgrind memcheck; the pkg-config and link-line checks);
#   4. the Python package and SGLang backend tests (scripts/pytest.sh) against the real SGLang;
#   5. a quick run of the benchmark (smoke test of `hicache-valkey bench`).
#
# Counting: every step leaves JUnit XML in build/test-results/<step>/ (nextest's and ctest's and
# pytest's own; one test case per file for shellcheck, one for the bench run), and the counts are
# summed from those files' <testcase> elements (scripts/lib-junit.sh), never from prose. A step
# that exits non-zero without a failed test case in its results (a build error, a crash of the
# runner, no results at all) counts as one more failed test.
#
# Prints a summary line "tests: N passed, M failed" last and exits non-zero on any failure, and
# when no test passed at all.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$PWD
# shellcheck source=scripts/lib-junit.sh
. "$repo/scripts/lib-junit.sh"

results=$repo/build/test-results
rm -rf "$results"
mkdir -p "$results"

steps=()
# step ID NAME COMMAND...: runs COMMAND (its JUnit files go to $results/ID/), records its status.
step() {
  local id=$1 name=$2 status=0
  shift 2
  mkdir -p "$results/$id"
  echo "==> $name" >&2
  "$@" || status=$?
  echo "$status" >"$results/$id.status"
  steps+=("$id|$name")
}

shellcheck_all() {
  local f status=0 one
  for f in scripts/*.sh .ci/run; do
    one=0
    shellcheck -x "$f" || one=$?
    junit_case "$results/shellcheck/$(basename "$f").xml" shellcheck "$f" "$one"
    [ "$one" -eq 0 ] || status=1
  done
  return "$status"
}

cargo_tests() {
  local config="$results/nextest.toml"
  # A profile of our own: JUnit results, no fail-fast, and a hung test killed after 10 minutes.
  cat >"$config" <<TOML
[profile.hicache-ci]
fail-fast = false
slow-timeout = { period = "60s", terminate-after = 10 }
[profile.hicache-ci.junit]
path = "$results/cargo/junit.xml"
TOML
  cargo nextest run --config-file "$config" --profile hicache-ci --workspace --all-targets --no-fail-fast
}

bench_smoke() {
  local status=0
  scripts/bench.sh --quick || status=$?
  junit_case "$results/bench/bench.xml" bench "scripts/bench.sh --quick" "$status"
  return "$status"
}

if ! scripts/install-deps.sh; then
  echo "installing dependencies failed" >&2
  echo "tests: 0 passed, 1 failed"
  exit 1
fi
step shellcheck "shellcheck" shellcheck_all
step cargo "cargo tests (nextest)" cargo_tests
step ctest "C tests (ctest)" env HICACHE_CTEST_JUNIT_DIR="$results/ctest" scripts/ctest.sh
step pytest "Python / SGLang tests (pytest)" scripts/pytest.sh --junitxml="$results/pytest/pytest.xml"
step bench "benchmark smoke run" bench_smoke

echo
total_passed=0 total_failed=0 total_skipped=0 failed_steps=()
for entry in "${steps[@]}"; do
  id=${entry%%|*} name=${entry#*|}
  status=$(cat "$results/$id.status")
  files=("$results/$id"/*.xml)
  if [ -e "${files[0]}" ]; then
    read -r passed failed skipped < <(junit_count "${files[@]}")
  else
    passed=0 failed=0 skipped=0
  fi
  note=""
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 note=" (exit status $status without a failed test in its results: counted as one failure)"
  elif [ "$status" -eq 0 ] && [ "$passed" -eq 0 ]; then
    failed=1 note=" (no test passed: counted as one failure)"
  fi
  [ "$failed" -eq 0 ] || failed_steps+=("$name")
  printf '  %-32s %4d passed, %d failed, %d skipped%s\n' "$name:" "$passed" "$failed" "$skipped" "$note"
  total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
done
echo "  (JUnit results in $results; $total_skipped skipped)"
[ ${#failed_steps[@]} -eq 0 ] || echo "failed steps: ${failed_steps[*]}"
echo "tests: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ] && [ "$total_passed" -gt 0 ]
