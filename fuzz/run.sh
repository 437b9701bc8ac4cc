#!/usr/bin/env bash
# Run every fuzz target for a while (default 30 s each; `fuzz/run.sh 300` for longer).
# Fails if any target finds a crash; the crashing input is left in fuzz/artifacts/<target>/.
# Only a stable toolchain is assumed: RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
targets=(route digest reference manifest range config)
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t (${seconds}s)"
    if cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tee "/tmp/berth-fuzz-$t.log" | grep -E "^Done [0-9]+ runs|ERROR|panicked|SUMMARY" ; then :; fi
    if grep -qE "ERROR: libFuzzer|panicked|SUMMARY: " "/tmp/berth-fuzz-$t.log"; then
        failed+=("$t")
    fi
done
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s without a crash"
