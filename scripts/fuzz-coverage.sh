#!/usr/bin/env bash
# Coverage figures for one fuzz target: fuzz it for SECONDS from a copy of its
# corpus, then replay the grown corpus once with libFuzzer's -print_coverage=1
# and report, per source file matching the filters, functions and edges
# (libFuzzer's "edges": sanitizer-coverage points) covered out of those
# compiled into the target's binary.
#
#   scripts/fuzz-coverage.sh TARGET SECONDS [SOURCE_FILTER...]
#   scripts/fuzz-coverage.sh merge 600 src/merge.rs
#   scripts/fuzz-coverage.sh http_head 0 src/http.rs src/front.rs   # replay only
#
# SOURCE_FILTER (default ./src/): a source path matched at a path-component
# boundary against the path relative to the repository root, so `src/ws.rs`
# is the crate's src/ws.rs and `lib.rs` both src/lib.rs and fuzz/src/lib.rs.
# A leading ./ anchors it at the root (`./src/lib.rs`), a trailing / takes a
# whole directory (`src/session/`), a leading / is an absolute path prefix
# (for code outside the repository, such as a dependency's).
#
# Work files go to fuzz/target/coverage/TARGET/ (the grown corpus, run.log,
# cov.log); the checked-in corpus/TARGET/ is only read. A finding is saved
# under fuzz/artifacts/TARGET/ as with `cargo fuzz run`; the coverage is still
# reported, and the script then exits 1.
#
# Needs cargo-fuzz (installed here if missing) and an llvm-symbolizer: taken
# from LLVM_SYMBOLIZER_PATH or ASAN_SYMBOLIZER_PATH if set, else Debian's
# /usr/lib/llvm-N/bin/llvm-symbolizer for N = rustc's LLVM major version, else
# llvm-symbolizer on PATH, else the newest /usr/lib/llvm-*/bin one
# (`apt-get install llvm-22`). Everything runs under `nice -n 19`, one process,
# no -jobs/-fork: the machine's cores are shared.
#
# Environment: FUZZ_COV_TIMEOUT (libFuzzer -timeout, default 10 s),
# FUZZ_COV_SEEDS_ONLY=1 (start from corpus/TARGET/seed-* only, not from the
# hex-named finds a local `cargo fuzz run` left there).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 2 ] || usage
target=$1
secs=$2
shift 2
[[ $secs =~ ^[0-9]+$ ]] || usage
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=("./src/")

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
all_targets=$(cargo fuzz list)
if ! grep -qx -- "$target" <<<"$all_targets"; then
    echo "no fuzz target '$target'; targets: $(tr '\n' ' ' <<<"$all_targets")" >&2
    exit 2
fi

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
symbolizer=""
for c in "${LLVM_SYMBOLIZER_PATH:-}" "${ASAN_SYMBOLIZER_PATH:-}" \
    "/usr/lib/llvm-$llvm_major/bin/llvm-symbolizer" \
    "$(command -v llvm-symbolizer || true)" \
    "$(find /usr/lib -maxdepth 3 -path '/usr/lib/llvm-*/bin/llvm-symbolizer' 2>/dev/null | sort -V | tail -n 1)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then
        symbolizer=$c
        break
    fi
done
if [ -z "$symbolizer" ]; then
    echo "no llvm-symbolizer: install one (Debian: apt-get install llvm-$llvm_major) or set LLVM_SYMBOLIZER_PATH" >&2
    exit 2
fi
export ASAN_SYMBOLIZER_PATH=$symbolizer LLVM_SYMBOLIZER_PATH=$symbolizer
PATH="$(dirname "$symbolizer"):$PATH"
export PATH

t0=$(date +%s)
echo "== build $target (cargo fuzz build, release: the flags cargo-fuzz uses, PC table included)"
mkdir -p "target/coverage/$target"
work="$root/fuzz/target/coverage/$target"
if ! nice -n 19 cargo fuzz build "$target" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    echo "build failed (full log: $work/build.log)" >&2
    exit 2
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$root/fuzz/target/$triple/release/$target"
t1=$(date +%s)

rm -rf "$work/corpus"
mkdir -p "$work/corpus" "artifacts/$target"
if [ "${FUZZ_COV_SEEDS_ONLY:-0}" = 1 ]; then
    find "corpus/$target" -maxdepth 1 -type f -name 'seed-*' -exec cp -t "$work/corpus" {} +
else
    find "corpus/$target" -maxdepth 1 -type f -exec cp -t "$work/corpus" {} +
fi
start_files=$(find "$work/corpus" -type f | wc -l)
seeds=$(find "$work/corpus" -type f -name 'seed-*' | wc -l)
list_artifacts() { find "artifacts/$target" -maxdepth 1 -type f -printf '%f\n' | sort; }
artifacts_before=$(list_artifacts)
timeout=${FUZZ_COV_TIMEOUT:-10}
common=(-timeout="$timeout" -artifact_prefix="$root/fuzz/artifacts/$target/")

run_rc=0
if [ "$secs" -gt 0 ]; then
    echo "== fuzz $target for ${secs}s from $start_files corpus files ($seeds seeds), nice 19, one process"
    nice -n 19 "$bin" "${common[@]}" -max_total_time="$secs" -print_final_stats=1 \
        "$work/corpus" >"$work/run.log" 2>&1 || run_rc=$?
else
    echo "== no fuzzing (SECONDS=0): coverage of the $start_files corpus files only"
    : >"$work/run.log"
fi
t2=$(date +%s)

echo "== replay $(find "$work/corpus" -type f | wc -l) corpus files with -runs=0 -print_coverage=1 (symbolizer: $symbolizer)"
cov_rc=0
nice -n 19 "$bin" "${common[@]}" -runs=0 -print_coverage=1 \
    "$work/corpus" >"$work/cov.log" 2>&1 || cov_rc=$?
t3=$(date +%s)
artifacts_new=$(comm -13 <(printf '%s\n' "$artifacts_before") <(list_artifacts) | sed '/^$/d')

# The run's own figures.
fstat() { sed -n "s/^stat::$1: *//p" "$work/run.log" | tail -n 1; }
last_status=$(grep -E '^#[0-9]+[[:space:]].*cov: ' "$work/run.log" | tail -n 1 || true)
replay_status=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$work/cov.log" | tail -n 1 || true)
field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$2"; }
pcs=$(sed -n 's/^INFO: Loaded 1 PC tables (\([0-9]*\) PCs).*/\1/p' "$work/cov.log" | head -n 1)
execs=$(fstat number_of_executed_units)
[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' <<<"$last_status")
echo
echo "== $target: libFuzzer"
if [ "$secs" -gt 0 ]; then
    echo "  run:    ${secs}s, execs ${execs:-?} ($(fstat average_exec_per_sec)/s), new units $(fstat new_units_added)," \
        "peak rss $(fstat peak_rss_mb) MB; last status: cov $(field cov "$last_status") ft $(field ft "$last_status")" \
        "corp $(field corp "$last_status")"
fi
echo "  replay: cov $(field cov "$replay_status") ft $(field ft "$replay_status") corp $(field corp "$replay_status")" \
    "(binary: ${pcs:-?} PCs)"
finding=none
if [ "$run_rc" -ne 0 ] || [ "$cov_rc" -ne 0 ] || [ -n "$artifacts_new" ]; then
    finding="exit $run_rc (run), $cov_rc (replay)"
    [ -z "$artifacts_new" ] || finding="$finding; artifacts: $(tr '\n' ' ' <<<"$artifacts_new")"
fi
echo "  finding: $finding"

# The coverage lines, e.g.
#   COVERED_FUNC: hits: 2 edges: 20/63 <packetflix::auth::TokenSet>::parse /work/x/src/auth.rs:31
#     UNCOVERED_PC: /work/x/src/auth.rs:45
#   UNCOVERED_FUNC: hits: 0 edges: 0/15 <packetflix::auth::TokenSet>::new /work/x/src/auth.rs:80
# become one tab-separated record per function of a matching file:
#   file line name covered_edges edges entered uncovered_lines
if ! grep -q '^COVERED_FUNC:' "$work/cov.log"; then
    tail -n 40 "$work/cov.log" >&2
    echo "no coverage printed (full log: $work/cov.log)" >&2
    exit 2
fi
filter_list=$(printf '%s\n' "${filters[@]}")
report=$(awk -v root="$root" -v filters="$filter_list" '
function norm(p,    n, parts, out, i, k, s) {
    n = split(p, parts, "/"); k = 0
    for (i = 1; i <= n; i++) {
        if (parts[i] == "." || (parts[i] == "" && i > 1)) continue
        if (parts[i] == ".." && k > 0 && out[k] != ".." && !(k == 1 && out[1] == "")) { k--; continue }
        out[++k] = parts[i]
    }
    s = out[1]
    for (i = 2; i <= k; i++) s = s "/" out[i]
    return s
}
function rel(p) {
    p = norm(p)
    if (index(p, root "/") == 1) return substr(p, length(root) + 2)
    return p
}
function matches(r,    i, f, inrepo) {
    inrepo = substr(r, 1, 1) != "/"
    for (i = 1; i <= nf; i++) {
        f = flt[i]
        if (substr(f, 1, 1) == "/") { if (index(r, f) == 1) return 1; continue }
        if (!inrepo) continue
        if (substr(f, 1, 2) == "./") {
            f = substr(f, 3)
            if (r == f || (substr(f, length(f)) == "/" && index(r, f) == 1)) return 1
            continue
        }
        if (substr(f, length(f)) == "/") {
            if (index(r, f) == 1 || index(r, "/" f) > 0) return 1
        } else if (r == f || (length(r) > length(f) && substr(r, length(r) - length(f)) == "/" f)) {
            return 1
        }
    }
    return 0
}
function flush() {
    if (cur != "") print "F\t" cur "\t" own "\t" lines
    cur = ""; lines = ""; own = 0
}
function relc(p) {
    if (!(p in cache)) cache[p] = rel(p)
    return cache[p]
}
BEGIN { nf = split(filters, flt, "\n"); cur = ""; funcfile = "" }
/^(UN)?COVERED_FUNC: / {
    flush()
    loc = $NF; line = loc; sub(/.*:/, "", line); file = loc; sub(/:[0-9]*$/, "", file)
    name = $6
    for (i = 7; i < NF; i++) name = name " " $i
    split($5, e, "/")
    funcfile = relc(file)
    if (matches(funcfile)) cur = funcfile "\t" line "\t" name "\t" e[1] "\t" e[2] "\t" ($1 == "COVERED_FUNC:")
    next
}
/^  UNCOVERED_PC: / {
    loc = $2; line = loc; sub(/.*:/, "", line); file = loc; sub(/:[0-9]*$/, "", file)
    if (line == "0") next
    r = relc(file)
    if (r == funcfile) {
        if (cur != "") { own++; lines = lines " " line }
    } else if (matches(r)) {
        print "I\t" r "\t" line
    }
    next
}
/^[^ ]/ { flush(); funcfile = "" }
END { flush() }
' "$work/cov.log" | sort -t $'\t' -k1,1 -k2,2 -k3,3n)
inlined=$(sed -n 's/^I\t//p' <<<"$report")
report=$(sed -n 's/^F\t//p' <<<"$report")

# Uncovered lines as sorted, de-duplicated ranges: "45 51-53".
ranges() { tr ' ' '\n' | sed '/^$/d' | sort -nu | awk '
    NR == 1 { a = b = $1; next }
    $1 == b + 1 { b = $1; next }
    { out = out (a == b ? a : a "-" b) " "; a = b = $1 }
    END { if (NR) out = out (a == b ? a : a "-" b); print out }'; }

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else printf "-" }'; }

echo
echo "== $target: coverage of the functions in the binary from ${filters[*]}"
if [ -z "$report" ]; then
    echo "  no function of the binary comes from these files"
else
    tf=0 tcf=0 te=0 tce=0
    files=$(cut -f1 <<<"$report" | uniq)
    while IFS= read -r f; do
        rows=$(awk -F '\t' -v f="$f" '$1 == f' <<<"$report")
        read -r nfn ncf ne nce < <(awk -F '\t' '{ n++; c += $6; e += $5; ce += $4 } END { print n, c, e, ce }' <<<"$rows")
        printf '  %-28s functions %4d/%-4d (%6s)   edges %5d/%-5d (%6s)\n' "$f" "$ncf" "$nfn" \
            "$(pct "$ncf" "$nfn")" "$nce" "$ne" "$(pct "$nce" "$ne")"
        tf=$((tf + nfn)) tcf=$((tcf + ncf)) te=$((te + ne)) tce=$((tce + nce))
        read -r uo un < <(awk -F '\t' '$6 == 1 { o += $7; u += $5 - $4 } END { print o + 0, u + 0 }' <<<"$rows")
        if [ "$un" -gt 0 ]; then
            echo "    of the $un uncovered edges in entered functions, $uo are at lines of this file (the others: inlined library code, such as panic and allocation-failure paths, or at no line)"
        fi
        unc=$(awk -F '\t' '$6 == 0 { printf "      %s:%s %s (%d edges)\n", $1, $2, $3, $5 }' <<<"$rows")
        if [ -n "$unc" ]; then
            echo "    never entered:"
            echo "$unc"
        fi
        part=$(awk -F '\t' '$6 == 1 && $4 < $5' <<<"$rows")
        if [ -n "$part" ]; then
            echo "    entered, with uncovered edges (covered/edges; uncovered at lines of this file: count, lines):"
            while IFS=$'\t' read -r _ l n c e _ o ul; do
                ul=$(ranges <<<"$ul")
                printf '      %s:%s %s %d/%d; %d: %s\n' "$f" "$l" "$n" "$c" "$e" "$o" "${ul:--}"
            done <<<"$part"
        fi
        il=$(awk -F '\t' -v f="$f" '$1 == f { print $2 }' <<<"$inlined")
        if [ -n "$il" ]; then
            echo "    inlined into functions of other files: $(wc -l <<<"$il") uncovered edges at lines $(ranges <<<"$il")"
        fi
    done <<<"$files"
    printf '  %-28s functions %4d/%-4d (%6s)   edges %5d/%-5d (%6s)\n' "total" "$tcf" "$tf" \
        "$(pct "$tcf" "$tf")" "$tce" "$te" "$(pct "$tce" "$te")"
fi
echo
printf 'SUMMARY target=%s seconds=%s execs=%s cov=%s ft=%s replay_cov=%s replay_ft=%s corpus=%s' \
    "$target" "$secs" "${execs:-0}" "$(field cov "$last_status")" "$(field ft "$last_status")" \
    "$(field cov "$replay_status")" "$(field ft "$replay_status")" "$(field corp "$replay_status")"
if [ -n "$report" ]; then
    printf ' functions=%s/%s(%s) edges=%s/%s(%s)' "$tcf" "$tf" "$(pct "$tcf" "$tf")" "$tce" "$te" "$(pct "$tce" "$te")"
fi
printf ' finding=%s\n' "$(tr ' ' '_' <<<"$finding")"
echo "time: build $((t1 - t0))s, corpus copy + fuzz $((t2 - t1))s, replay+coverage $((t3 - t2))s; logs in $work/"
[ "$finding" = none ]
