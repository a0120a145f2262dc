# Shared by scripts/serve and scripts/test (sourced, not run). Bash only.
# Everything comes from Debian 12 packages; nothing is downloaded from anywhere else.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${JOBS:-$(nproc)}
export DEBIAN_FRONTEND=noninteractive

# What building libterminals needs (the library, terminals-cli, the examples).
BUILD_PACKAGES=(cmake make g++ pkg-config libuv1-dev libpcre2-dev node-llhttp
                libcurl4-openssl-dev rapidjson-dev libssl-dev openssl)

_t0=$(date +%s)
log() { printf '[%s +%ss] %s\n' "${0##*/}" "$(($(date +%s) - _t0))" "$*"; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# Installs the Debian packages that are not installed yet; runs apt-get update first, and only
# when something is missing.
install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages: all ${#} present"
    return 0
  fi
  log "Debian packages: installing ${missing[*]}"
  as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
  as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
  log "Debian packages: done"
}

# configure_and_build BUILD_DIR [CMAKE_ARGS...]
configure_and_build() {
  local dir=$1
  shift
  log "configure $dir: $*"
  cmake -S "$ROOT" -B "$dir" "$@"
  log "build $dir with $JOBS jobs"
  cmake --build "$dir" -j "$JOBS"
  log "build done"
}
