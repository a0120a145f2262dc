#!/usr/bin/env bash
# terminals-cli's command-line contract: help texts, --version, and exit status 2 with a clear
# message for usage errors. Usage: cli.sh PATH_TO_TERMINALS_CLI EXPECTED_VERSION
set -uo pipefail

cli=$1 version=$2
failures=0
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

# expect STATUS PATTERN_ON_STDOUT PATTERN_ON_STDERR -- ARGS...   (an empty pattern is not checked)
expect() {
  local want=$1 out_re=$2 err_re=$3
  shift 4
  "$cli" "$@" >"$out" 2>"$err"
  local got=$?
  local ok=1
  [[ $got -eq $want ]] || ok=0
  [[ -z "$out_re" ]] || grep -Eq -- "$out_re" "$out" || ok=0
  [[ -z "$err_re" ]] || grep -Eq -- "$err_re" "$err" || ok=0
  if [[ $ok -eq 1 ]]; then
    echo "ok    terminals-cli $*"
  else
    echo "FAIL  terminals-cli $*: exit $got (want $want)"
    sed 's/^/      stdout: /' "$out"
    sed 's/^/      stderr: /' "$err"
    failures=$((failures + 1))
  fi
}

v=${version//./\\.}
expect 0 "^terminals-cli $v \(libterminals $v\)$" "" -- --version
expect 0 "^terminals-cli $v \(libterminals $v\)$" "" -- -V
expect 0 "^terminals-cli $v \(libterminals $v\)$" "" -- version
expect 0 "^$v$" "" -- version --short
expect 0 "\"libterminals\": \"$v\"" "" -- version --json
expect 0 "^Commands:" "" -- --help
expect 0 "^  version +Print the versions" "" -- -h
expect 0 "^Usage: terminals-cli version" "" -- version --help
expect 0 "^Usage: terminals-cli version" "" -- help version
expect 0 "^Usage: terminals-cli help" "" -- help --help
expect 0 "^Examples:" "" -- help help
expect 2 "" "'frobnicate' is not a terminals-cli command" -- frobnicate
expect 2 "" "Did you mean 'version'\?" -- versoin
expect 2 "" "terminals-cli --help" -- frobnicate
expect 2 "" "unknown option '--bogus'" -- --bogus
expect 2 "" "no command given" --
expect 2 "" "unexpected argument 'extra'" -- version extra
expect 2 "" "terminals-cli version --help" -- version --short --json
expect 2 "" "'nope' is not a terminals-cli command" -- help nope
expect 0 "^  agent +Serve the Open Terminal" "" -- --help
expect 0 "^  serve +Run the orchestrator" "" -- --help
expect 0 "^Usage: terminals-cli serve" "" -- serve --help
expect 0 "TERMINALS_OPEN_WEBUI_URL" "" -- help serve
expect 2 "" "TERMINALS_PORT: 'abc' is not a port number" -- serve --port abc
expect 2 "" "unexpected argument 'extra'" -- serve extra
expect 2 "" "--host needs a value" -- serve --host
expect 2 "" "TERMINALS_TOKEN_CACHE_TTL: 'soon' is not a number of seconds" -- serve --token-cache-ttl soon
expect 2 "" "unexpected argument '--no-such-setting'" -- serve --no-such-setting 1
expect 0 "^Usage: terminals-cli agent" "" -- agent --help
expect 0 "OPEN_TERMINAL_API_KEY_FILE" "" -- help agent
expect 0 "OPEN_TERMINAL_INFO" "" -- help agent
expect 0 "^      --info TEXT" "" -- agent --help
expect 2 "" "--info needs a value" -- agent --no-auth --info
expect 2 "" "unexpected argument 'extra'" -- agent extra
expect 0 "^      --expire-after SECONDS" "" -- agent --help
expect 2 "" "--expire-after needs a number of seconds" -- agent --no-auth --expire-after 0
expect 2 "" "--ready-fd needs a descriptor number" -- agent --no-auth --ready-fd 1
expect 2 "" "bad --listen" -- agent --listen nonsense --no-auth
expect 0 "TERMINALS_AGENT_LISTEN" "" -- help agent
export TERMINALS_AGENT_LISTEN=nonsense
expect 2 "" "bad TERMINALS_AGENT_LISTEN" -- agent --no-auth
# The flag wins over the environment: the bad flag is the one reported.
expect 2 "" "bad --listen" -- agent --no-auth --listen also-nonsense
unset TERMINALS_AGENT_LISTEN
unset OPEN_TERMINAL_API_KEY OPEN_TERMINAL_API_KEY_FILE
expect 2 "" "no API key" -- agent
export OPEN_TERMINAL_API_KEY=k OPEN_TERMINAL_API_KEY_FILE=/nonexistent
expect 2 "" "both set" -- agent
unset OPEN_TERMINAL_API_KEY OPEN_TERMINAL_API_KEY_FILE

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all terminals-cli checks passed"
