#!/usr/bin/env bash
# Runs every test of hicache-valkey on a fresh machine: installs what is missing (valkey-server
# 8.x from bookworm-backports, cmake, valgrind, the SGLang test venv), then
#   1. cargo tests: unit, property and integration tests against throwaway valkey-servers, and the
#      check that include/hicache_valkey.h is what cbindgen generates from the source;
#   2. the C tests (ctest) through the installed CMake package, plain, under ASan+UBSan and under
#      valgrind memcheck;
#   3. the Python package and SGLang backend tests (pytest) against the real SGLang package;
#   4. a quick run of the benchmark (smoke test of `hicache-valkey bench`).
# Prints a summary line "tests: N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp -t hicache-valkey-test.XXXXXX)
trap 'rm -f "$log"' EXIT
failed_steps=()
step() {
  local name=$1; shift
  echo "==> $name" >&2
  if ! "$@" 2>&1 | tee -a "$log"; then failed_steps+=("$name"); fi
}

scripts/install-deps.sh || { echo "installing dependencies failed" >&2; exit 1; }
step "cargo test" cargo test --all-targets
step "C tests (ctest)" scripts/ctest.sh
step "Python / SGLang tests (pytest)" scripts/pytest.sh
step "benchmark smoke run" scripts/bench.sh --quick

# Sum what each runner reported (cargo: "N passed; M failed", ctest: "failed out of N",
# pytest: "N passed").
passed=0; failed=0
while read -r p f; do passed=$((passed + p)); failed=$((failed + f)); done < <(
  grep -aoE 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | awk '{print $4, $6}'
  grep -aE '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | awk '{print $9 - $4, $4}'
  grep -aE '^=+ .*[0-9]+ (passed|failed)' "$log" \
    | awk '{p=0; f=0; for (i=1;i<=NF;i++) { if ($(i+1) ~ /^passed/) p=$i; if ($(i+1) ~ /^failed/) f=$i }; print p, f}'
)
echo
if [ ${#failed_steps[@]} -gt 0 ]; then
  echo "failed steps: ${failed_steps[*]}"
  echo "tests: $passed passed, $((failed > 0 ? failed : 1)) failed"
  exit 1
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
