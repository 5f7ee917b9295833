#!/usr/bin/env bash
# CI for Windows (issue 19): the allocator crates built for x86_64-pc-windows-gnu with
# mingw-w64, their tests and the executor's unit and integration tests run under wine (Debian's wine 8),
# with the number of tests run and passed printed per crate; `cargo check` for
# x86_64-pc-windows-msvc. Any failure
# (a failed test, a test binary that ends without its summary, as one that crashes under
# wine does) fails the run.
#
# Which tests cannot run under wine, and why, is listed in README.md ("Platforms").
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*"; }

step "system packages: mingw-w64 (linker) and wine (runner)"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends gcc-mingw-w64-x86-64 wine wine64

step "Rust targets"
rustup target add x86_64-pc-windows-gnu x86_64-pc-windows-msvc

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# Each test binary runs under a timeout, so that a hang (a deadlock, or wine waiting on
# something it never delivers) fails that binary, which `run_tests` reports as failed
# (nonzero status, no summary), instead of hanging CI. cargo splits the runner at spaces.
# `--kill-after` ends a binary that ignores the TERM.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="timeout --kill-after=30 600 wine"
export WINEDEBUG=-all
# A wine prefix of our own, so that nothing of the user's ~/.wine is used or changed.
export WINEPREFIX="$PWD/target/wine-prefix"
# wine makes the prefix but not its parent (no target/ yet in a fresh checkout).
mkdir -p "$(dirname "$WINEPREFIX")"

step "wine prefix, with a bcryptprimitives.dll stand-in (wine 8 lacks it; Rust's std needs ProcessPrng)"
wine cmd /c exit
x86_64-w64-mingw32-gcc -O2 -shared -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
    .ci/wine/bcryptprimitives.c .ci/wine/bcryptprimitives.def -lbcrypt

step "cargo clippy for x86_64-pc-windows-gnu (the Windows-only code)"
cargo clippy --target x86_64-pc-windows-gnu --all-targets \
    -p pagekeep-mmap -p pagekeep-slab -p pagekeep-slab-capi -p pagekeep-arena -- -D warnings
cargo clippy --target x86_64-pc-windows-gnu --all-targets --no-default-features \
    -p pagekeep-alloc-test -- -D warnings
# The executor: library, unit tests, examples and the integration tests that build on
# Windows (executor/README.md, "Platforms").
cargo clippy --target x86_64-pc-windows-gnu -p pagekeep-executor --all-targets -- -D warnings

step "cargo check for x86_64-pc-windows-msvc (no linker needed)"
cargo check --target x86_64-pc-windows-msvc -p pagekeep-mmap -p pagekeep-slab -p pagekeep-arena
cargo check --target x86_64-pc-windows-msvc --no-default-features -p pagekeep-alloc-test

# Runs one crate's tests under wine and prints the tests run and passed. Fails when cargo
# fails, when a test failed, or when a test binary started ("running N tests") and
# printed no summary (wine can end a crashed program with status 0).
summary=""
run_tests() {
    local crate=$1
    shift
    step "tests of $crate under wine"
    local log
    log=$(mktemp)
    local status=0
    cargo test --target x86_64-pc-windows-gnu --no-fail-fast -p "$crate" "$@" 2>&1 | tee "$log" \
        || status=$?
    local counts
    counts=$(awk '
        /^running [0-9]+ tests?$/ {
            if (pending) { missing++ }
            pending = 1
        }
        /^test result: / {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed;?$/) passed += $i
                if ($(i + 1) ~ /^failed;?$/) failed += $i
                if ($(i + 1) ~ /^ignored;?$/) ignored += $i
            }
            pending = 0
        }
        END {
            if (pending) { missing++ }
            printf "%d %d %d %d\n", passed + failed, passed, ignored, missing
        }' "$log")
    rm -f "$log"
    local run passed ignored missing
    read -r run passed ignored missing <<<"$counts"
    local line="$crate: $run tests run, $passed passed ($ignored ignored)"
    summary+="$line"$'\n'
    echo "$line"
    if [ "$status" -ne 0 ] || [ "$run" -ne "$passed" ] || [ "$missing" -ne 0 ]; then
        echo "$crate: FAILED under wine (cargo status $status, $missing binaries without a summary)" >&2
        exit 1
    fi
}

run_tests pagekeep-mmap
run_tests pagekeep-slab
run_tests pagekeep-arena
# The `peers` feature (on by default) brings jemalloc, whose build needs a Unix shell,
# and the executor benchmark's tokio peers: the suite runs without them, as in the
# release step of .ci/run.
run_tests pagekeep-alloc-test --no-default-features
# The executor's unit tests (the Ctrl-C watcher's among them) and its integration tests
# (those that build on Windows: executor/README.md, "Platforms"). The examples are built
# after the test binary: the example tests run them, and under wine the test binary
# cannot run the host's cargo to build them.
cargo test --target x86_64-pc-windows-gnu -p pagekeep-executor --lib --test all --no-run
cargo build --target x86_64-pc-windows-gnu -p pagekeep-executor --examples
run_tests pagekeep-executor --lib --test all

step "Windows: tests run and passed under wine (${SECONDS}s in all)"
printf '%s' "$summary"
