# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/ctest.sh: test results as JUnit XML files, the one
# machine-readable format every runner here writes (cargo nextest, ctest --output-junit,
# pytest --junitxml), so counts come from results, never from a runner's prose.
#
#   junit_case FILE SUITE NAME STATUS [MESSAGE]
#       Writes FILE: one test case NAME of suite SUITE, passed when STATUS is 0, else failed.
#       For checks that are a script's exit status (a build, shellcheck, the bench smoke run).
#   junit_count FILE...
#       Prints "PASSED FAILED SKIPPED" summed over the <testcase> elements of the FILEs. A case
#       with a <failure> or <error> child, or ctest's status="notrun" (a test that could not be
#       started), is failed; one with <skipped> (or ctest's status="disabled") is skipped; any
#       other is passed. A FILE that is missing or not valid XML counts as one failed case.

junit_case() {
  python3 - "$@" <<'PY'
import sys
from xml.sax.saxutils import quoteattr

path, suite, name, status = sys.argv[1:5]
message = sys.argv[5] if len(sys.argv) > 5 else f"exit status {status}"
failed = status != "0"
case = f"<testcase classname={quoteattr(suite)} name={quoteattr(name)}"
case += f"><failure message={quoteattr(message)}/></testcase>" if failed else "/>"
with open(path, "w") as f:
    f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    f.write(f"<testsuites><testsuite name={quoteattr(suite)} tests=\"1\" failures=\"{int(failed)}\">{case}</testsuite></testsuites>\n")
PY
}

junit_count() {
  python3 - "$@" <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"junit_count: cannot read {path}: {e}", file=sys.stderr)
        failed += 1
        continue
    for case in root.iter("testcase"):
        children = {child.tag for child in case}
        status = case.get("status", "")
        if children & {"failure", "error"} or status == "notrun":
            failed += 1
        elif "skipped" in children or status == "disabled":
            skipped += 1
        else:
            passed += 1
print(passed, failed, skipped)
PY
}
