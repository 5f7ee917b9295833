#!/usr/bin/env bash
# Runs the C programs of tests/c/ under glibc's malloc and under pagekeep-slab (LD_PRELOAD)
# and requires the same output and a zero exit status from both: each program prints only
# properties that glibc documents (null or not, errno, alignment, bytes kept), never
# sizes or addresses. The fork program runs FORK_RUNS times (default 20) in a row. One
# more loads the library with dlopen and closes it while a thread that used it lives.
#
# The C++ program (cxx_operators.cpp) must also have its operator new and delete bound to
# the library under LD_PRELOAD.
#
# Usage: slab-alloc/capi/tests/run-c-tests.sh        (from anywhere; needs gcc and g++)
#        SLAB_ALLOC_CAPI_LIB=/path/to/lib.so ...      (to test another build of the library)
set -euo pipefail
cd "$(dirname "$0")/../../.."

fail() { printf 'run-c-tests.sh: FAILED: %s\n' "$*" >&2; exit 1; }

command -v gcc >/dev/null || fail "gcc is not installed"
command -v g++ >/dev/null || fail "g++ is not installed"
if [ -z "${SLAB_ALLOC_CAPI_LIB:-}" ]; then
    cargo build --release -p pagekeep-slab-capi
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    SLAB_ALLOC_CAPI_LIB="$target_dir/release/libpagekeep_slab_capi.so"
fi
lib=$(realpath "$SLAB_ALLOC_CAPI_LIB")
[ -f "$lib" ] || fail "$lib was not built"
fork_runs=${FORK_RUNS:-20}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=slab-alloc/capi/tests/c

# Compiles $1.c. `-fno-builtin`: gcc otherwise assumes that `free` and
# `posix_memalign` leave errno alone and folds the programs' checks of it away. The
# warnings turned off are about the impossible requests and the blocks that a failed
# realloc leaves live, which the programs make on purpose.
build() {
    gcc -O1 -g -fno-builtin -Wall -Wextra -Werror -Wno-alloc-size-larger-than -Wno-use-after-free \
        -Wno-deprecated-declarations -pthread -o "$work/$1" "$sources/$1.c"
}

# Compiles $1.cpp (C++17, for the aligned forms of operator new).
build_cxx() {
    g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -pthread -o "$work/$1" "$sources/$1.cpp"
}

# Runs program $1 (already built) under glibc once, then $2 times under the library.
compare() {
    local name=$1 runs=$2 status=0
    "$work/$name" > "$work/$name.glibc" 2>&1 || fail "$name failed under glibc: $(tail -5 "$work/$name.glibc")"
    for run in $(seq 1 "$runs"); do
        status=0
        env LD_PRELOAD="$lib" "$work/$name" > "$work/$name.preload" 2>&1 || status=$?
        if [ "$status" -ne 0 ] || ! cmp -s "$work/$name.glibc" "$work/$name.preload"; then
            diff "$work/$name.glibc" "$work/$name.preload" | head -30 >&2 || true
            fail "$name (run $run of $runs) exited with status $status or printed something else under LD_PRELOAD"
        fi
    done
    printf 'run-c-tests.sh: %s ok (%d run(s), same output as glibc)\n' "$name" "$runs"
}

for program in malloc_family malloc_family_size_edges glibc_extensions fork_from_threads \
    fork_handlers_that_allocate fork_vfork_spawn thread_exit_handoff decay_after_peak_with_cached_work \
    large_blocks_reused large_blocks_under_address_limit mapping_limit zero_size_blocks; do
    build "$program"
done
build_cxx cxx_operators
compare malloc_family 1
compare malloc_family_size_edges 1
compare glibc_extensions 1
compare fork_from_threads "$fork_runs"
compare fork_handlers_that_allocate 1
compare fork_vfork_spawn 1
compare thread_exit_handoff 1
compare decay_after_peak_with_cached_work 1
compare large_blocks_reused 1
compare large_blocks_under_address_limit 1
compare mapping_limit 1
compare zero_size_blocks 1
compare cxx_operators 1
# The operators are the library's, not libstdc++'s wrappers around malloc and free.
bindings=$(LD_DEBUG=bindings LD_PRELOAD="$lib" "$work/cxx_operators" 2>&1 >/dev/null)
for symbol in _Znwm _ZdlPvm _ZnwmSt11align_val_t _ZdaPv; do
    grep -q "to $lib .*normal symbol \`$symbol'" <<<"$bindings" \
        || fail "cxx_operators: $symbol is not bound to the library under LD_PRELOAD"
done
echo "run-c-tests.sh: cxx_operators binds operator new and delete to the library"
# Loaded with dlopen instead, used by a thread, dlclose'd, then the thread exits: the
# library stays mapped (linked with -z nodelete), so its thread-exit hook is still there.
build dlclose_while_a_thread_used_it
"$work/dlclose_while_a_thread_used_it" "$lib" || fail "a thread that used the library crashed after dlclose"
# Loaded with dlopen into a program whose thread makes the first call while another
# forks, pthread_atfork slowed to 100 ms by a shim: the child must allocate (the
# library registers its fork handlers when it is loaded, not at that first call).
build fork_while_the_first_call_registers
gcc -O1 -shared -fPIC -Wall -Wextra -Werror -o "$work/slow_register_atfork.so" \
    "$sources/slow_register_atfork.c" -ldl
LD_PRELOAD="$work/slow_register_atfork.so" "$work/fork_while_the_first_call_registers" "$lib" \
    || fail "a child forked while the first call into a dlopen'ed library registered could not allocate"
# Aligned new of sizes within an alignment of SIZE_MAX: refused under the library
# (libstdc++'s own wraps them to 0 bytes and returns a block, so no comparison).
build_cxx cxx_aligned_new_size_max
LD_PRELOAD="$lib" "$work/cxx_aligned_new_size_max" \
    || fail "an aligned operator new of a size near SIZE_MAX returned a block"
echo "run-c-tests.sh: every C program behaved under LD_PRELOAD as under glibc"
# The text layout of capi/text-layout.ld (x86-64, unless turned off): the allocation entry
# points in .text.pagekeep, std's backtrace code in .text.rarely_run after the linkage
# table. A pattern that stopped matching would leave the layout silently undone.
if [ "$(uname -m)" = x86_64 ] && [ "${PAGEKEEP_CAPI_TEXT_LAYOUT:-1}" != 0 ]; then
    command -v readelf >/dev/null && command -v nm >/dev/null || fail "readelf and nm (binutils) are needed"
    layout=$(readelf -SW "$lib" | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^\.(text\.pagekeep|text\.rarely_run|plt)$/) print $i, $(i + 2), $(i + 4) }')
    # The symbol table goes through a file: a debug build's is too long for an argument.
    symbols="$work/symbols"
    nm --defined-only "$lib" >"$symbols"
    python3 - "$layout" "$symbols" <<'PY' || fail "the library's text is not laid out as capi/text-layout.ld says"
import sys
sections = {name: (int(address, 16), int(address, 16) + int(size, 16))
            for name, address, size in (line.split() for line in sys.argv[1].splitlines())}
symbols = {}
for line in open(sys.argv[2]).read().splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tT":
        symbols.setdefault(parts[2], int(parts[0], 16))
def inside(section, address):
    start, end = sections[section]
    return start <= address < end
missing = {".text.pagekeep", ".text.rarely_run", ".plt"} - sections.keys()
assert not missing, f"no section {missing}"
for entry in ("malloc", "free", "calloc", "realloc", "_Znwm"):
    assert inside(".text.pagekeep", symbols[entry]), f"{entry} outside .text.pagekeep"
# Nearly all: a function LLVM merged with an identical one keeps the other's section.
gimli = [inside(".text.rarely_run", address) for name, address in symbols.items() if "gimli" in name]
assert gimli and sum(gimli) >= 0.9 * len(gimli), f"{len(gimli) - sum(gimli)} of {len(gimli)} gimli functions outside .text.rarely_run"
assert sections[".text.rarely_run"][0] >= sections[".plt"][1], ".text.rarely_run before the linkage table"
PY
    echo "run-c-tests.sh: the entry points lie in .text.pagekeep, std's backtrace code after the linkage table"
fi
# The library reaches its thread-local word with the initial-exec model (x86-64 Linux),
# so its whole TLS block takes static TLS, of which a process that dlopens it after
# start-up has only the few hundred bytes glibc keeps spare: the magazines must stay
# out of it (they are over 5 KiB). The dlopen test above would fail to load it too.
if [ "$(uname -m)" = x86_64 ] && [ "$(uname -s)" = Linux ]; then
    command -v readelf >/dev/null || fail "readelf (binutils) is needed"
    tls_bytes=$(readelf -lW "$lib" | awk '$1 == "TLS" { print $6 }')
    tls_bytes=$((tls_bytes))
    [ -n "$tls_bytes" ] && [ "$tls_bytes" -le 256 ] \
        || fail "the library's TLS block is ${tls_bytes:-missing} bytes (at most 256 leave dlopen working)"
    readelf -dW "$lib" | grep -q STATIC_TLS \
        || fail "the library is not flagged STATIC_TLS: its TLS word is not reached with the initial-exec model"
    echo "run-c-tests.sh: the library's TLS block is $tls_bytes bytes, initial-exec (STATIC_TLS)"
fi
# The unwinder is linked in statically (capi/build.rs, glibc targets, unless turned off):
# no libgcc_s loaded into every program, and none of the unwinder's symbols exported,
# where they would take the place of the program's own.
if [ "$(uname -s)" = Linux ] && [ "${PAGEKEEP_CAPI_STATIC_UNWINDER:-1}" != 0 ]; then
    command -v readelf >/dev/null && command -v nm >/dev/null || fail "readelf and nm (binutils) are needed"
    needed=$(readelf -dW "$lib" | awk '/\(NEEDED\)/ { print $NF }' | tr -d '[]' | tr '\n' ' ')
    case " $needed" in
        *" libgcc_s"*) fail "the library needs libgcc_s ($needed): the static unwinder was not linked" ;;
    esac
    exported=$(nm -D --defined-only "$lib" | awk '$3 ~ /^_Unwind_/ { print $3 }' | tr '\n' ' ')
    [ -z "$exported" ] || fail "the library exports the unwinder's symbols: $exported"
    echo "run-c-tests.sh: the library needs ${needed% } only, and exports no _Unwind_ symbol"
fi
