#!/usr/bin/env bash
# Builds the local Docker image of the agent (default terminals-agent:dev) without a registry
# or a Dockerfile: a busybox + terminals-agent root filesystem made in a temporary directory and
# loaded with `docker import`. Run by the CMake target `agent-image`; usable by hand:
#
#   cmake/agent-image.sh PATH/TO/terminals-agent [IMAGE]
#
# Environment: TERMINALS_AGENT_IMAGE (the image name when no IMAGE argument is given),
# BUSYBOX (default /bin/busybox, from Debian's busybox-static), DOCKER (default docker).
#
# The image runs as 1000:1000 with HOME=/home/user and serves tcp://0.0.0.0:8000 like the real
# Open Terminal image; its label io.libterminals.agent-listen tells the Docker backend it can
# instead point TERMINALS_AGENT_LISTEN at a socket in a bind-mounted /run/terminal.
set -euo pipefail

prog=${0##*/}
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

[[ $# -ge 1 && $# -le 2 && $1 != -h && $1 != --help ]] || {
  sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
  exit 2
}
agent=$1
image=${2:-${TERMINALS_AGENT_IMAGE:-terminals-agent:dev}}
busybox=${BUSYBOX:-/bin/busybox}
docker=${DOCKER:-docker}

[[ -f $agent && -x $agent ]] || die "$agent is not an executable file (build it: cmake --build BUILD_DIR --target terminals-agent)"
[[ -x $busybox ]] || die "$busybox not found: install it with 'apt-get install busybox-static'"
# A dynamically linked busybox would need its libraries in the image too.
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked; install the static one with 'apt-get install busybox-static'"
fi
command -v "$docker" >/dev/null 2>&1 || die "'$docker' not found: install the Docker client ('apt-get install docker.io')"
if ! err=$("$docker" version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
  die "the Docker engine does not answer (${err%%$'\n'*}). Start it, e.g. as root:
  setsid nohup dockerd --host unix:///var/run/docker.sock >/tmp/dockerd.log 2>&1 </dev/null &"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/agent-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,etc,home/user,run/terminal,tmp,proc,sys,dev,root}

# busybox and one symlink per applet. perl (Debian's essential perl-base) makes all ~270 in
# one process: an `ln` per applet took 2.5 s here.
install -m 0755 "$busybox" "$root/bin/busybox"
"$root/bin/busybox" --list | perl -e 'my $dir = shift; while (<STDIN>) { chomp;
    next if $_ eq "" || $_ eq "busybox";
    symlink("busybox", "$dir/$_") or die "symlink $dir/$_: $!\n" }' "$root/bin" \
  || die "cannot create the busybox applet links in $root/bin"

# The agent and every library ldd lists (the loader included), at the same absolute paths. The
# agent links libstdc++ statically, so this is usually libc, libm, libuv and a few more.
# Debug sections are dropped (symbols stay, for backtraces): they are two thirds of a Debug or
# RelWithDebInfo binary and only slow the import down.
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$root/bin/terminals-agent" "$agent" || die "strip $agent failed"
  chmod 0755 "$root/bin/terminals-agent"
else
  install -m 0755 "$agent" "$root/bin/terminals-agent"
fi
if libs=$(ldd "$agent" 2>/dev/null); then
  for lib in $(grep -oE '/[^ ]+' <<<"$libs" | sort -u); do
    [[ -f $lib ]] || die "ldd lists $lib for $agent, but it does not exist"
    mkdir -p "$root${lib%/*}"
    cp -L "$lib" "$root$lib"
    chmod 0755 "$root$lib"
  done
fi

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
user:x:1000:
EOF
# Explicit, so user and group lookups never depend on glibc's built-in defaults.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"

chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,etc,home,home/user,run,proc,sys,dev}
chmod 0700 "$root/root" "$root/run/terminal"
chmod 1777 "$root/tmp"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"

# Ownership is set in the archive, not on disk, so this works without root: everything is
# 0:0 except the user's home and the agent's socket directory, appended as 1000:1000.
tarball=$work/rootfs.tar
tar -C "$root" -cf "$tarball" --numeric-owner --owner=0 --group=0 \
  --anchored --exclude=./home/user --exclude=./run/terminal .
tar -C "$root" -rf "$tarball" --numeric-owner --owner=1000 --group=1000 \
  ./home/user ./run/terminal

old_id=$("$docker" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
id=$("$docker" import \
  -c 'USER 1000:1000' \
  -c 'WORKDIR /home/user' \
  -c 'ENV HOME=/home/user PATH=/bin:/usr/bin:/sbin SHELL=/bin/sh TERMINALS_AGENT_LISTEN=tcp://0.0.0.0:8000' \
  -c 'EXPOSE 8000/tcp' \
  -c 'LABEL io.libterminals.agent-listen=/run/terminal/agent.sock' \
  -c 'CMD ["/bin/terminals-agent"]' \
  -m "terminals-agent from $agent" \
  "$tarball" "$image") || die "docker import of $image failed"

# Re-tagging leaves the previous build dangling; drop it unless a container still uses it.
if [[ -n $old_id && $old_id != "$id" ]]; then
  "$docker" image rm "$old_id" >/dev/null 2>&1 || true
fi

size=$("$docker" image inspect --format '{{.Size}}' "$image")
printf '%s: built %s\n  id   %s\n  size %s bytes (%s MB)\n' "$prog" "$image" "$id" "$size" \
  "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')"
