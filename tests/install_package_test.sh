#!/usr/bin/env bash
# Installs this build of dj into a temporary prefix, builds tests/consumer (a plugin author's
# project using find_package(dj) and dj_add_kernel) against it, and runs it under dj-run -p 2.
set -euo pipefail
build_dir=$1
source_dir=$2
prefix=$(mktemp -d /tmp/dj-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
cmake -S "$source_dir/tests/consumer" -B "$prefix/consumer-build" \
      -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
out=$("$prefix/bin/dj-run" -p 2 "$prefix/consumer-build/consumer_master" \
      "$prefix/consumer-build/libconsumer_kernels.so")
echo "$out"
# workers 2 and 3: 3*2 + 3*3 = 15
grep -q "consumer: nworkers=2 sum=15" <<<"$out"
