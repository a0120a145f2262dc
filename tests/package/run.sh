#!/usr/bin/env bash
# The package test: install the current build into a scratch prefix and use it the way an outside
# project would.
#   1. cmake --install <build> --prefix <work>/prefix
#   2. tests/package/consumer with find_package(terminals CONFIG REQUIRED): configure, build, run
#   3. the same main.cpp compiled by hand with `pkg-config --cflags --libs terminals`
#   4. examples/ configured standalone against the prefix: build, run loop_timer
#   5. the build tree as a package (terminals_DIR=<build>): configure, build, run the consumer
#   6. the installed terminals-cli answers --version
# Usage: run.sh BUILD_DIR WORK_DIR SOURCE_DIR   (env: CMAKE, CXX, BUILD_TYPE, SANITIZE)
set -euo pipefail

build=$1 work=$2 src=$3
cmake=${CMAKE:-cmake}
cxx=${CXX:-c++}
build_type=${BUILD_TYPE:-Release}
here="$src/tests/package"

# A static library built with sanitizers needs them on the consumer's link line as well.
flags=()
cxxflags=""
if [[ -n "${SANITIZE:-}" ]]; then
  cxxflags="-fsanitize=$SANITIZE -fno-omit-frame-pointer"
fi
flags+=("-DCMAKE_CXX_COMPILER=$cxx" "-DCMAKE_BUILD_TYPE=$build_type" "-DCMAKE_CXX_FLAGS=$cxxflags"
        "-DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON" "-DCMAKE_FIND_PACKAGE_NO_SYSTEM_PACKAGE_REGISTRY=ON")

step() { printf '\n== %s\n' "$*"; }

rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

step "install $build into $prefix"
"$cmake" --install "$build" --prefix "$prefix"

step "find_package consumer"
"$cmake" -S "$here/consumer" -B "$work/consumer" "${flags[@]}" "-DCMAKE_PREFIX_PATH=$prefix"
found=$(sed -n 's/^terminals_DIR:PATH=//p' "$work/consumer/CMakeCache.txt")
case "$found" in
  "$prefix"/*) echo "terminals found in $found" ;;
  *) echo "FAIL: find_package(terminals) found '$found', not the package in $prefix" >&2; exit 1 ;;
esac
"$cmake" --build "$work/consumer" -j2
"$work/consumer/consumer"

step "pkg-config consumer"
pc=$(find "$prefix" -name terminals.pc -print -quit)
[[ -n "$pc" ]] || { echo "FAIL: no terminals.pc under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
pc_flags=$(pkg-config --cflags --libs terminals)
echo "pkg-config --cflags --libs terminals: $pc_flags"
# shellcheck disable=SC2086  # the flags are meant to split
"$cxx" -std=c++20 $cxxflags "$here/consumer/main.cpp" -o "$work/consumer_pkgconfig" $pc_flags
"$work/consumer_pkgconfig"

step "examples/ standalone against the install"
"$cmake" -S "$src/examples" -B "$work/examples" "${flags[@]}" "-DCMAKE_PREFIX_PATH=$prefix"
"$cmake" --build "$work/examples" -j2
"$work/examples/loop_timer"

step "the build tree as a package"
"$cmake" -S "$here/consumer" -B "$work/consumer-buildtree" "${flags[@]}" "-Dterminals_DIR=$build"
"$cmake" --build "$work/consumer-buildtree" -j2
"$work/consumer-buildtree/consumer"

if [[ -e "$build/cli/terminals-cli" ]]; then
  step "installed terminals-cli"
  "$prefix/bin/terminals-cli" --version
  step "installed terminals-cli agent hands over to the lean terminals-agent"
  test -x "$prefix/bin/terminals-agent"
  # The agent runs once per terminal: none of these may creep back into its process (each costs
  # hundreds of kB resident; see cli/CMakeLists.txt).
  if ldd "$prefix/bin/terminals-agent" | grep -E 'libcurl|libssl|libcrypto|libstdc\+\+'; then
    echo "terminals-agent links a library it must not (above)" >&2
    exit 1
  fi
  "$prefix/bin/terminals-cli" agent --no-auth --listen "unix:$work/agent.sock" --home "$work" &
  agent_pid=$!
  for _ in $(seq 100); do [[ -S "$work/agent.sock" ]] && break; sleep 0.05; done
  test -S "$work/agent.sock"
  comm=$(cat "/proc/$agent_pid/comm")
  kill -TERM "$agent_pid"
  wait "$agent_pid"
  if [[ "$comm" != "terminals-agent" ]]; then
    echo "terminals-cli agent ran as '$comm', not terminals-agent" >&2
    exit 1
  fi

  step "installed terminals-cli serve starts, answers, provisions and stops on SIGTERM"
  port=$(( 20000 + RANDOM % 20000 ))
  key="package-test-key-$RANDOM$RANDOM"
  TERMINALS_API_KEY="$key" "$prefix/bin/terminals-cli" serve --host 127.0.0.1 --port "$port" \
    --data-dir "$work/serve" --isolation none >"$work/serve.out" 2>&1 &
  serve_pid=$!
  up=0
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    sleep 0.05
  done
  [[ $up -eq 1 ]] || { cat "$work/serve.out"; echo "serve did not listen" >&2; exit 1; }
  grep -q "listening on http://127.0.0.1:$port" "$work/serve.out"
  grep -q "TERMINALS_API_KEY" "$work/serve.out"
  # A first request provisions a terminal (the installed terminals-agent) and answers through it.
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /files/cwd HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-User-Id: pkg\r\nConnection: close\r\n\r\n' "$key" >&3
  answer=$(timeout 20 cat <&3)
  exec 3<&-
  grep -q '^HTTP/1.1 200' <<<"$answer" || { echo "$answer"; cat "$work/serve.out"; exit 1; }
  grep -q '"cwd"' <<<"$answer"
  kill -TERM "$serve_pid"
  wait "$serve_pid"
  grep -q "stopped; terminals keep running" "$work/serve.out"
  # The terminal outlives the server by design; end it here.
  pkill -KILL -f -- "--home $work/serve/homes" || true
fi

step "package test passed"
