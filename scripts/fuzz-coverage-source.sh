#!/usr/bin/env bash
# Source-based coverage (regions, lines, functions) of a fuzz target's
# corpus, from an `-C instrument-coverage` build, for source files:
#
#   scripts/fuzz-coverage-source.sh TARGET CORPUS_DIR FILE...
#   scripts/fuzz-coverage-source.sh session fuzz/target/coverage/session/corpus \
#       src/proto/session/{mod,start,capture,resolve,refusal,errlines}.rs
#
# Unlike libFuzzer's edges (scripts/fuzz-coverage.sh), a region is a piece
# of the source itself: no inlined library code, no panic or unwind edges.
# Needs llvm-profdata and llvm-cov of rustc's LLVM version (Debian's
# llvm-N for N = rustc's LLVM major, e.g. `apt-get install llvm-22`):
# cargo-fuzz looks for them in rustc's sysroot only, so the profiles are
# merged here. Prints llvm-cov's per-file report, then the functions with
# missed regions. Work files: fuzz/coverage/TARGET/.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
target=$1 corpus=$(realpath "$2")
shift 2
root=$(cd "$(dirname "$0")/.." && pwd -P)
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
bin=/usr/lib/llvm-$llvm/bin
[ -x "$bin/llvm-cov" ] || { echo "no $bin/llvm-cov: apt-get install llvm-$llvm" >&2; exit 2; }
cd "$root/fuzz"
rm -rf "coverage/$target"
# The run itself ends with cargo-fuzz failing to find llvm-profdata.
RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz coverage "$target" "$corpus" >"/tmp/fuzz-coverage-source-$target.log" 2>&1 || true
raw=(coverage/"$target"/raw/*.profraw)
[ -e "${raw[0]}" ] || { echo "no profiles; see /tmp/fuzz-coverage-source-$target.log" >&2; exit 1; }
"$bin/llvm-profdata" merge -sparse "${raw[@]}" -o "coverage/$target/coverage.profdata"
exe=target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release/$target
echo "== $target: $(find "$corpus" -type f | wc -l) inputs from $corpus"
"$bin/llvm-cov" report "$exe" -instr-profile="coverage/$target/coverage.profdata" "${files[@]}"
echo "== functions with missed regions (missed/regions)"
"$bin/llvm-cov" report -show-functions -Xdemangler="$bin/llvm-cxxfilt" "$exe" \
    -instr-profile="coverage/$target/coverage.profdata" "${files[@]}" |
    python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    m = re.match(r"^(.*?)\s+(\d+)\s+(\d+)\s+[\d.]+%\s+\d+\s+\d+\s+[\d.]+%", line)
    if m and m.group(1) != "TOTAL" and int(m.group(3)) > 0:
        rows.append((int(m.group(3)), int(m.group(2)), m.group(1)))
for missed, regions, name in sorted(rows, reverse=True)[:25]:
    print(f"  {missed:3}/{regions:<3} {name}")
'
