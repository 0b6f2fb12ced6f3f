#!/usr/bin/env bash
# The README's commands: `scripts/dev.sh demo`, `scripts/dev.sh test` and `scripts/dev.sh fuzz`.
# Each installs what is missing on a fresh Debian 12 machine (as root), build dj, install it
# (dj-run, dj-worker, libdj, headers, CMake package) under $DJ_PREFIX (default /usr/local),
# then run the notebook demo on 4 local workers, or the whole test suite (plain build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build, a ThreadSanitizer build, and the bounded
# fuzz step); `fuzz` runs the fuzz step alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DJ_BUILD_DIR:-$here/build}
prefix=${DJ_PREFIX:-/usr/local}
jobs=${DJ_JOBS:-$(nproc)}

packages=(build-essential cmake pkg-config libboost-dev libboost-filesystem-dev capnproto
          libcapnp-dev libssh-dev libssl-dev catch2 procps liblapacke-dev
          clang libclang-rt-14-dev)  # clang + libFuzzer: the fuzz step

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "dev.sh: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

configure_and_build() {  # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$here" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$prefix" "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
}

# The SSH test hosts and the one-node SLURM the manager tests run against (they install their
# own packages; both need root). Their variables are exported for ctest; the trap stops them.
# The workplace's test-infrastructure scripts: $DJ_SHARED_SCRIPTS, else ../shared/scripts next
# to this checkout, else /work/shared/scripts (where a CI clone elsewhere still finds them).
shared_scripts=${DJ_SHARED_SCRIPTS:-}
if [ -z "$shared_scripts" ]; then
  for candidate in "$here/../shared/scripts" /work/shared/scripts; do
    if [ -x "$candidate/ssh-hosts-up" ]; then shared_scripts=$candidate; break; fi
  done
  shared_scripts=${shared_scripts:-$here/../shared/scripts}
fi
start_test_clusters() {
  for s in ssh-hosts-up ssh-hosts-down slurm-local-up slurm-local-down; do
    [ -x "$shared_scripts/$s" ] || { echo "dev.sh: $shared_scripts/$s is missing: the SSH and SLURM tests need it" >&2; exit 1; }
  done
  trap stop_test_clusters EXIT
  echo "== starting 3 SSH test hosts and a one-node SLURM"
  eval "$("$shared_scripts/ssh-hosts-up" 3)"
  eval "$("$shared_scripts/slurm-local-up")"
}
stop_test_clusters() {
  "$shared_scripts/ssh-hosts-down" >/dev/null || echo "dev.sh: ssh-hosts-down reported leftovers" >&2
  "$shared_scripts/slurm-local-down" >/dev/null || echo "dev.sh: slurm-local-down reported leftovers" >&2
}

# The fuzz step: every decoder's libFuzzer target (tests/fuzz), built with clang under
# ASan+UBSan, first replays its committed seeds and regression inputs (each must pass), then
# runs a fixed number of new inputs (1.05 million in all; about a minute on 2 cores).
# New corpus entries go to a temporary directory, never into the checkout.
fuzz_runs=(frame_reader:250000 message_decode:300000 call_args:200000 plugin_image:300000)
run_fuzzers() {
  local dir=${DJ_FUZZ_BUILD_DIR:-$build-fuzz} work total=0
  CC=clang CXX=clang++ cmake -S "$here" -B "$dir" -DDJ_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$dir" -j "$jobs" --target fuzzers
  work=$(mktemp -d)
  for spec in "${fuzz_runs[@]}"; do
    local target=${spec%%:*} runs=${spec#*:} inputs=("$here/tests/fuzz/seeds/${spec%%:*}")
    [ -d "$here/tests/fuzz/regressions/$target" ] && inputs+=("$here/tests/fuzz/regressions/$target")
    mkdir -p "$work/$target"
    if ! "$dir/bin/fuzz_$target" -runs="$runs" -timeout=10 -artifact_prefix="$work/$target-" \
         "$work/$target" "${inputs[@]}" >"$work/$target.log" 2>&1; then
      tail -n 40 "$work/$target.log" >&2
      echo "dev.sh: fuzz_$target failed; the input is in $work (add it to tests/fuzz/regressions/$target once fixed)" >&2
      exit 1
    fi
    local done_runs
    done_runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 executions in \2 s/p' "$work/$target.log")
    echo "fuzz_$target: $done_runs, no crash (${#inputs[@]} committed input dirs replayed)"
    total=$((total + ${done_runs%% *}))
  done
  echo "== fuzzing: $total executions in all, no crash"
  rm -rf "$work"
}

install_dj() {
  cmake --install "$build" >/dev/null
  ldconfig 2>/dev/null || true
  echo "== installed dj-run, dj-worker, libdj and headers under $prefix"
}

# The whole suite under ThreadSanitizer (a build of its own). Every process, workers included,
# writes its reports to files under one directory (a worker's exit status is not a test's), so
# a race in any process fails the step. No suppressions.
run_tsan_suite() {
  echo "== test suite (ThreadSanitizer build)"
  configure_and_build "$build-tsan" -DDJ_TSAN=ON
  local reports
  reports=$(mktemp -d)
  TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 log_path=$reports/tsan" \
    ctest --test-dir "$build-tsan" --output-on-failure -j "$jobs" --timeout 600
  # (A worker that a limits test starves of memory leaves a FATAL allocator line: not a race.)
  local races
  races=$(grep -l "WARNING: ThreadSanitizer" "$reports"/tsan* 2>/dev/null || true)
  if [ -n "$races" ]; then
    echo "dev.sh: ThreadSanitizer reported races:" >&2
    cat $races >&2
    exit 1
  fi
  rm -rf "$reports"
  echo "== ThreadSanitizer: no report from any process"
}

cmd=${1:-}
case "$cmd" in
  demo)
    install_packages
    configure_and_build "$build"
    install_dj
    echo "== dj-run -p 4 notebook"
    exec "$prefix/bin/dj-run" -p 4 "$build/bin/notebook"
    ;;
  test)
    install_packages
    configure_and_build "$build"
    install_dj
    cmake --build "$build" --target check-headers  # every public header compiles on its own
    start_test_clusters  # used by both test builds below
    echo "== test suite (plain build)"
    ctest --test-dir "$build" --output-on-failure -j "$jobs" --timeout 300
    echo "== fuzzing the decoders (libFuzzer, ASan+UBSan)"
    run_fuzzers
    if [ "${DJ_SKIP_SANITIZE:-0}" != 1 ]; then
      echo "== test suite (AddressSanitizer + UndefinedBehaviorSanitizer build)"
      configure_and_build "$build-asan" -DDJ_SANITIZE=ON
      # A small quarantine: tests check that freed values give their memory back (RSS).
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=16 \
      UBSAN_OPTIONS=print_stacktrace=1 \
        ctest --test-dir "$build-asan" --output-on-failure -j "$jobs" --timeout 600
      run_tsan_suite
    fi
    ;;
  fuzz)
    install_packages
    echo "== fuzzing the decoders (libFuzzer, ASan+UBSan)"
    run_fuzzers
    ;;
  *)
    echo "usage: scripts/dev.sh demo|test|fuzz" >&2
    exit 2
    ;;
esac
