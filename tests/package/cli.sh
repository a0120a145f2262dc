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

# The admin commands: help, and usage errors caught before anything is sent (exit 2).
expect 0 "^  policy +List, show, store" "" -- --help
expect 0 "^  terminals +List, stop and refresh" "" -- --help
expect 0 "^Usage: terminals-cli policy ls" "" -- policy --help
expect 0 "^Usage: terminals-cli policy ls" "" -- policy put x --help
expect 0 "^      --api-key KEY" "" -- help policy
expect 0 "^Usage: terminals-cli terminals ls" "" -- terminals --help
expect 0 "^      --reset" "" -- help terminals
expect 2 "" "no subcommand given \\(ls, get, put or rm\\)" -- policy
expect 2 "" "unknown subcommand 'frob'" -- policy frob
expect 2 "" "get needs a policy ID" -- policy get
expect 2 "" "unexpected argument 'extra'" -- policy rm a extra
expect 2 "" "put needs a FILE, - \\(standard input\\), --set or --lifecycle" -- policy put a
expect 2 "" "--set needs KEY=VALUE" -- policy put a --set novalue
expect 2 "" "--set pids_limit needs a whole number" -- policy put a - --set pids_limit=many
expect 2 "" "cannot read '/nonexistent.json'" -- policy put a /nonexistent.json
expect 2 "" "--data and --lifecycle are exclusive" -- policy get a --data --lifecycle
expect 2 "" "unexpected argument '--set'" -- policy get a --set x=1
expect 2 "" "--url needs a value" -- policy ls --url
expect 2 "" "is https://; terminals-cli speaks plain http:// only" -- policy ls --url https://example.com --api-key k
expect 2 "" "'ftp://x' is not an http:// URL" -- policy ls --url ftp://x --api-key k
expect 2 "" "no subcommand given \\(ls, stop or refresh\\)" -- terminals
expect 2 "" "unknown subcommand 'kill'" -- terminals kill
expect 2 "" "stop needs --user USER" -- terminals stop
expect 2 "" "--reset is for refresh only" -- terminals stop --user a --reset
expect 2 "" "--user needs a value" -- terminals ls --user
expect 2 "" "unexpected argument '--bogus'" -- terminals ls --bogus
TERMINALS_URL=https://x expect 2 "" "TERMINALS_URL: 'https://x' is https://" -- terminals ls --api-key k
# No key anywhere: says where it looked and how to give one.
TERMINALS_API_KEY= expect 2 "" "no service key: pass --api-key, set TERMINALS_API_KEY" -- policy ls --data-dir /nonexistent
# Nothing listens on port 1: a clear "is it running?" and exit 1.
expect 1 "" "cannot reach the terminals server at http://127.0.0.1:1 \\(is \`terminals-cli serve\` running\\?\\)" -- policy ls --url http://127.0.0.1:1 --api-key k

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all terminals-cli checks passed"
