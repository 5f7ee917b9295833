#!/usr/bin/env bash
# A C program frees a 400 MiB peak of 4000-byte blocks, under LD_PRELOAD of pagekeep-slab:
# its resident memory must come back within 10 % (at least 1 MiB) of the level before
# the peak, polled for up to 5 s, while it keeps working in other size classes (also with
# one block of the peak's class in use at a time; decay driven by operations), and, under
# SLAB_DECAY_THREAD=1, while it does nothing at all
# (also after a 20 MB peak freed before the heap's first decay pass, and after a peak of
# large blocks in a program that never used the size classes). And, with the
# reclaim-idle-threads feature, the blocks that eight blocked threads keep in their
# caches come back: at once on malloc_trim(0), and within the same 5 s while the program
# works, or sleeps under SLAB_DECAY_THREAD=1. A forked child starts its own decay thread
# and does not hang when its first pass runs inside glibc's pthread_join.
#
# Usage: slab-alloc/capi/tests/decay.sh [blocks]   (from anywhere; needs gcc)
set -euo pipefail
cd "$(dirname "$0")/../../.."

fail() { printf 'decay.sh: FAILED: %s\n' "$*" >&2; exit 1; }

blocks=${1:-102400}
cargo build --release -p pagekeep-slab-capi
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
lib="$target_dir/release/libpagekeep_slab_capi.so"
[ -f "$lib" ] || fail "$lib was not built"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/decay" slab-alloc/capi/tests/c/decay.c -lpthread
gcc -O2 -o "$work/idle_threads" slab-alloc/capi/tests/c/idle_threads.c -lpthread
gcc -O2 -shared -fPIC -o "$work/big_tls.so" slab-alloc/capi/tests/c/big_tls.c
gcc -O2 -o "$work/decay_thread_after_fork" slab-alloc/capi/tests/c/decay_thread_after_fork.c -ldl -lpthread

LD_PRELOAD="$lib" "$work/decay" work "$blocks" || fail "memory not returned while working in other classes"
# The peak's class stays in use (one block at a time): its floors of kept magazines and
# empty slabs must not keep the peak.
LD_PRELOAD="$lib" "$work/decay" busy "$blocks" || fail "memory not returned while its class stays in use"
SLAB_DECAY_THREAD=1 LD_PRELOAD="$lib" "$work/decay" idle "$blocks" || fail "memory not returned by the decay thread"
# A small peak, allocated and freed before the heap's first decay pass was due (its
# first 250 ms): the decay thread must be running all the same.
SLAB_DECAY_THREAD=1 LD_PRELOAD="$lib" "$work/decay" idle 5000 ||
    fail "memory of a peak freed in the first 250 ms not returned by the decay thread"
# Large blocks alone: their operations must start the decay thread too, which then
# returns the freed blocks the heap kept for reuse.
SLAB_DECAY_THREAD=1 LD_PRELOAD="$lib" "$work/decay" idle-large ||
    fail "large blocks kept for reuse not returned by the decay thread"
# In a child made by fork, whose first decay pass runs in a free glibc makes holding the
# lock pthread_create takes (pthread_join freeing a thread's TLS): the decay thread must
# start again, later, and the child must not hang.
SLAB_DECAY_THREAD=1 LD_PRELOAD="$lib" "$work/decay_thread_after_fork" "$work/big_tls.so" 5 ||
    fail "a forked child hung or found no decay thread under SLAB_DECAY_THREAD=1"
# Blocked threads' caches: the library built with the reclaim-idle-threads feature (in
# a target directory of its own, so the default build above stays as it is).
CARGO_TARGET_DIR="$target_dir/reclaim-idle-threads" \
    cargo build --release -p pagekeep-slab-capi --features reclaim-idle-threads
reclaim_lib="$target_dir/reclaim-idle-threads/release/libpagekeep_slab_capi.so"
[ -f "$reclaim_lib" ] || fail "$reclaim_lib was not built"
LD_PRELOAD="$reclaim_lib" "$work/idle_threads" trim || fail "malloc_trim left blocked threads' caches resident"
LD_PRELOAD="$reclaim_lib" "$work/idle_threads" work ||
    fail "blocked threads' caches not returned while the program works in their class"
SLAB_DECAY_THREAD=1 LD_PRELOAD="$reclaim_lib" "$work/idle_threads" idle ||
    fail "blocked threads' caches not returned by the decay thread"
echo "decay.sh: freed peaks and blocked threads' caches returned"
