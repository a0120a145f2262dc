#pragma once

/// @file docker_backend.hpp
/// `DockerBackend`: one container per terminal through the Docker Engine API. It talks to the
/// engine over its unix socket (or tcp) with libcurl, never through the `docker` CLI, and
/// negotiates the API version with the engine (v1.41, Docker 20.10, and newer).
///
/// Per terminal:
///   container  `<prefix>-<sha256(user id)[:12]>` for policy "default", else
///              `<prefix>-<hash12>-<policy slug>`, plus `-<sha256(context)[:12]>` for a
///              non-default context: the reference's names. The slug is the policy id lower-
///              cased with every character outside [a-z0-9-] turned into '-', trimmed of '-'
///              and cut to 20; when that loses information (the slug is not the id itself) a
///              hash of the id is appended, so two policies never share a container.
///   labels     app.kubernetes.io/managed-by=terminals, openwebui.com/user-id, /policy,
///              /context-id, /context-hash (the reference's), io.libterminals.user-hash and
///              io.libterminals.instance (a hash of the data directory: two orchestrators on one
///              engine never adopt or remove each other's containers).
///   key        a fresh random key in OPEN_TERMINAL_API_KEY; recovered from the container's
///              environment when it is adopted after a restart.
///   limits     Memory (= MemorySwap: no swap), NanoCpus, PidsLimit, nofile; CapDrop ALL plus
///              `cap_add`; no-new-privileges; an init process; optionally a read-only root with
///              a tmpfs /tmp; StorageOpt size where the storage driver supports it (else a
///              warning, once, and the terminal runs without it).
///   home       <data_dir>/homes/<user hash>[/contexts/<context hash>] bind-mounted at
///              /home/user, created 0700 and owned by the container's user; or a named volume
///              `<container>-home` (`home = Volume`).
///   endpoint   images labelled `io.libterminals.agent-listen` (ours: the label's value names the
///              socket path in the container) listen on a unix socket in <data_dir>/run/<name>/,
///              bind-mounted at /run/terminal, and get `--network none` unless the spec asks for
///              the network. Other images (the real Open Terminal) have their port 8000
///              published on `publish_host` (an ephemeral port), or, with `networks`, join one of
///              those networks and are reached by container name.
///
/// A missing image is pulled (progress in the log and in `progress()`); `allowed_images` is
/// enforced before anything is created. `list()` reports every managed container of this
/// instance and removes half-created ones (created, never started). `provision()` adopts a
/// running container of the right name and labels, and replaces a stopped one (the home
/// persists). Engine errors are BackendUnavailable with the engine's reason; nothing is
/// cached about a failure, so the backend recovers as soon as the engine answers again.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/backend.hpp"
#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

class Loop;

/// One extra bind mount (TERMINALS_DOCKER_MOUNTS).
struct DockerMount {
  std::string source;  ///< absolute host path ("~" expanded)
  std::string target;  ///< absolute container path, normalised
  bool read_only = true;
};

/// Parses TERMINALS_DOCKER_MOUNTS: a JSON array of {"source", "target", "readOnly" (default
/// true)}. Refuses (InvalidArgument naming the item and the rule): invalid JSON, a non-array, a
/// non-object item, a missing or empty source or target, a non-boolean readOnly, relative
/// paths, a target that is "/" or equal to or under /app, /bin, /dev, /etc, /home, /proc,
/// /root, /run, /sbin, /sys, /usr or /var, and targets equal to or nested in each other.
/// Empty text is an empty list.
TERMINALS_API Result<std::vector<DockerMount>> parse_docker_mounts(std::string_view json);

/// Where a terminal's /home/user lives.
enum class DockerHome {
  Bind,    ///< a directory under the data directory (the reference's behaviour)
  Volume,  ///< a named volume per terminal, `<container name>-home`
};

struct DockerBackendOptions {
  /// The engine: "unix:///var/run/docker.sock", "unix:/path" or "tcp://HOST:PORT". Empty:
  /// $DOCKER_HOST, else /var/run/docker.sock.
  std::string docker_host;
  /// Homes and runtime directories (see the file comment). Required. With a containerised
  /// orchestrator this path must be the same on the engine's host.
  std::string data_dir;
  /// Used when a spec names no image. Required unless every spec names one.
  std::string default_image;
  /// TERMINALS_DOCKER_HOST: where published ports are bound and reached.
  std::string publish_host = "127.0.0.1";
  /// TERMINALS_DOCKER_NETWORK: empty, one network (every terminal joins it) or several (a
  /// terminal's network is chosen by a stable hash of its ids). Terminals on a network are
  /// reached by container name, so the orchestrator must be attached to them too.
  std::vector<std::string> networks;
  /// TERMINALS_DOCKER_MOUNTS, parsed (parse_docker_mounts).
  std::vector<DockerMount> mounts;
  /// TERMINALS_ALLOWED_IMAGES: globs as quantity.hpp's check_image reads them; empty = any.
  std::vector<std::string> allowed_images;
  DockerHome home = DockerHome::Bind;
  /// Read-only root file system, with a tmpfs /tmp of `tmp_bytes`.
  bool read_only_root = false;
  std::uint64_t tmp_bytes = 256ull << 20;
  /// Capabilities kept after dropping all ("NET_BIND_SERVICE", ...). NET_ADMIN is added for a
  /// spec whose env sets OPEN_TERMINAL_ALLOWED_DOMAINS, as the reference does.
  std::vector<std::string> cap_add;
  /// What an image may ask for in its `io.libterminals.capabilities` label
  /// (TERMINALS_DOCKER_IMAGE_CAPABILITIES): an image asking for another capability is refused
  /// before anything is created. The default is Docker's own default set, what a plain
  /// `docker run` of the image would keep; SYS_ADMIN, NET_ADMIN, SYS_PTRACE... need the operator.
  std::vector<std::string> image_capabilities = {
      "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
      "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"};
  /// The container's user, "uid[:gid]" (numeric). Empty: the image's own (a numeric USER, else
  /// root for none, else 1000:1000 for the home's owner).
  std::string user;
  /// Run an init process (docker-init) as PID 1 that reaps orphans.
  bool init = true;
  /// Container names start with this.
  std::string name_prefix = "terminals";
  /// Pull images that are missing; false: a missing image is an error.
  bool pull_missing = true;
  /// Create, start and first answer from the agent; a terminal not ready by then is removed
  /// and provision fails with Timeout. Pulling has its own limit.
  std::chrono::milliseconds start_timeout{30'000};
  std::chrono::milliseconds pull_timeout{600'000};
  /// SIGTERM to SIGKILL when stopping.
  std::chrono::seconds stop_grace{10};
  /// The port Open Terminal images listen on.
  std::uint16_t container_port = 8000;
};

class TERMINALS_API DockerBackend : public Backend {
 public:
  /// Checks the options (data directory usable, engine address, image globs, mounts) and
  /// creates the data directory's layout. Does not need the engine to be up: the first call
  /// that needs it negotiates the API version, and fails with BackendUnavailable while the
  /// engine does not answer.
  static Result<std::unique_ptr<DockerBackend>> create(Loop& loop, DockerBackendOptions options);

  /// "Docker 20.10.24, API 1.41 via unix:/var/run/docker.sock", or only the address before the
  /// engine first answered.
  virtual std::string engine_description() const = 0;
};

using DockerBackendPtr = std::unique_ptr<DockerBackend>;

}  // namespace terminals
