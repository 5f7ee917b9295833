#!/usr/bin/env bash
# Runs C programs that free wrongly (double, delayed double, aligned and large double
# frees, a byte written before the block, interior, misaligned, stack, wild and far
# pointers, a large block of another copy of the library) or write past a block (into a free neighbour, or just before exiting, as
# mimalloc-bench's 32_byte_memcpy_overflow) under LD_PRELOAD of the hardened build
# (`--features hardened`): each must abort (SIGABRT) with a message on stderr that
# names the mistake and the address; a correct program must run to its end under it.
# The default build must stop the misaligned free too (its one check of small frees).
#
# Usage: slab-alloc/capi/tests/hardened.sh   (from anywhere; needs gcc)
set -euo pipefail
cd "$(dirname "$0")/../../.."

fail() { printf 'hardened.sh: FAILED: %s\n' "$*" >&2; exit 1; }

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# A target directory of its own, so the hardened library does not replace the default one.
CARGO_TARGET_DIR="$target_dir/hardened" cargo build --release -p pagekeep-slab-capi --features hardened
lib="$target_dir/hardened/release/libpagekeep_slab_capi.so"
[ -f "$lib" ] || fail "$lib was not built"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/bad_free" slab-alloc/capi/tests/c/bad_free.c -ldl
# A second copy of the library (another heap) for "other-copy-large".
cp "$lib" "$work/other_copy.so"
export OTHER_COPY="$work/other_copy.so"

out=$(LD_PRELOAD="$lib" "$work/bad_free" fine) || fail "a correct program failed under the hardened build"
[ "$out" = fine ] || fail "a correct program printed $out"
# Zero-size blocks of every kind, freed: valid, so no report (run-c-tests.sh compares its
# output with glibc's under the default build).
gcc -O1 -fno-builtin -o "$work/zero_size_blocks" slab-alloc/capi/tests/c/zero_size_blocks.c
LD_PRELOAD="$lib" "$work/zero_size_blocks" >"$work/out" 2>&1 \
    || fail "zero-size blocks under the hardened build: $(tail -3 "$work/out")"

# mode, then the words the message must hold
cases=(
    "double|double free"
    "double-delayed|double free"
    "double-aligned|double free"
    "double-large|did not hand out"
    "other-copy-large|did not hand out"
    "underflow|the block's header was overwritten"
    "underflow-8|the block's header was overwritten"
    "overflow-at-exit|a free block was overwritten"
    "overflow-into-free|a free block was overwritten"
    "interior|not the start of a block"
    "interior-over-stale-prefix|not the start of a block"
    "prefix-copied-then-realloc|the block's header was overwritten"
    "unaligned|not the start of a block"
    "stack|did not hand out"
    "wild|did not hand out"
    "far|did not hand out"
)
for case in "${cases[@]}"; do
    mode=${case%%|*}
    words=${case#*|}
    status=0
    # (bash reports each abort with an "Aborted" line: expected here.)
    LD_PRELOAD="$lib" "$work/bad_free" "$mode" >"$work/out" 2>"$work/err" || status=$?
    [ "$status" -eq 134 ] || fail "$mode: exit status $status, not SIGABRT (stdout: $(cat "$work/out"); stderr: $(cat "$work/err"))"
    grep -q "$words" "$work/err" || fail "$mode: no '$words' in: $(cat "$work/err")"
    grep -q "0x[0-9a-f]" "$work/err" || fail "$mode: no address in: $(cat "$work/err")"
    printf 'hardened.sh: %-15s %s\n' "$mode" "$(head -c 160 "$work/err")"
done
echo "hardened.sh: all bad frees caught"

# The default build: a pointer off the 16-byte alignment of every block (its one check of
# small frees; blocks of the size classes carry no prefix there).
cargo build --release -p pagekeep-slab-capi
default_lib="$target_dir/release/libpagekeep_slab_capi.so"
status=0
LD_PRELOAD="$default_lib" "$work/bad_free" unaligned >"$work/out" 2>"$work/err" || status=$?
[ "$status" -eq 134 ] || fail "default build, unaligned: exit status $status, not SIGABRT"
grep -q "not the start of a block" "$work/err" || fail "default build, unaligned: $(cat "$work/err")"
echo "hardened.sh: the default build stops the unaligned free too"
