#!/usr/bin/env bash
# The publishable crates as a crates.io user gets them: each .crate file that
# `cargo package` left in target/package is unpacked into a scratch workspace, where
# the crates depend on each other's packaged forms (a [patch] stands in for the
# registry), and their tests are built from there. A test that only compiles in the
# repository (a path dependency that packaging drops, a file left out of the package)
# fails here.
#
# Every test is built. Two crates' tests are run: pagekeep-mmap's, whose test set differs
# once packaged (its dev-dependency on itself, which turns on its test features, is
# dropped), and pagekeep-executor's, which the workspace builds with a profile setting
# (no debug assertions in the `http` crate) that a package does not carry. The others
# run the same tests, built the same way, as in the workspace, which CI already ran.
set -euo pipefail
cd "$(dirname "$0")/.."
workspace=$PWD

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

members=()
patches=()
for crate in target/package/*.crate; do
    tar -xzf "$crate" -C "$scratch"
    dir=$(basename "$crate" .crate)
    name=${dir%-*}
    members+=("\"$dir\"")
    patches+=("$name = { path = \"$dir\" }")
done
if [ ${#members[@]} -eq 0 ]; then
    echo "no packaged crates in target/package: run cargo package first" >&2
    exit 1
fi

{
    echo '[workspace]'
    echo 'resolver = "2"'
    echo "members = [$(IFS=,; echo "${members[*]}")]"
    echo
    echo '[patch.crates-io]'
    printf '%s\n' "${patches[@]}"
} >"$scratch/Cargo.toml"
# The workspace's lock file, so that the packaged crates build against the same
# dependency versions as the tests CI just ran.
cp Cargo.lock "$scratch/"

cd "$scratch"
cat Cargo.toml
# The workspace's target directory: the third-party dependencies are built already.
export CARGO_TARGET_DIR="$workspace/target"
cargo test --workspace --no-run
cargo test -p pagekeep-mmap
cargo test -p pagekeep-executor
