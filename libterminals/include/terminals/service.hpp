#pragma once

/// @file service.hpp
/// `Service`: the whole product behind `terminals-cli serve` — authentication, the
/// orchestrator over a backend, and the proxy to each user's terminal — on one HTTP server,
/// with the reference orchestrator's routes:
///
///   GET  /health                                   {"status": true}, open
///   GET  /api/v1/status, /api/v1/terminals         admin (service key)
///   POST /api/v1/terminals/stop, .../refresh       admin
///   GET  /openapi.json, /p/{policy}/openapi.json   the terminal's tool schema, auth stripped
///   ANY  /p/{policy}/{path}                        proxied to the caller's terminal of that policy
///   ANY  /{path}                                   proxied to the caller's default terminal
///   WS   [/p/{policy}]/api/terminals/{session}     interactive terminal, first-message auth

#include <chrono>
#include <memory>
#include <string>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"
#include "terminals/settings.hpp"

namespace terminals {

class Loop;

class TERMINALS_API Service {
 public:
  /// Validates the settings, prepares the data directory, loads or generates the service key
  /// and creates the backend. Errors say what to fix (InvalidArgument, PolicyDenied, ...).
  static Result<std::unique_ptr<Service>> create(Loop& loop, Settings settings);
  /// Stops listening; terminals keep running and are adopted by the next start.
  virtual ~Service() = default;

  /// Adopts the terminals the backend already runs, then listens. Completes once serving.
  virtual void start(Callback<void> done) = 0;
  /// Where it listens (after start).
  virtual Endpoint local_endpoint() const = 0;
  /// The service key (admin key, and the data-plane key outside Open WebUI mode). Empty in
  /// open mode. Show it only when `service_key_generated()`.
  virtual const std::string& service_key() const = 0;
  /// True when this start generated the key (print it once); false when configured or loaded.
  virtual bool service_key_generated() const = 0;
  /// Where a generated key is kept (0600).
  virtual const std::string& service_key_path() const = 0;
  /// The backend in use ("local", ...) and, for local, its isolation.
  virtual std::string backend_description() const = 0;
  /// Graceful: stop accepting, let requests in flight finish for up to `grace`, wait for
  /// provisions in flight (nothing half-created), leave terminals running.
  virtual void shutdown(std::chrono::milliseconds grace, Callback<void> done) = 0;
};

using ServicePtr = std::unique_ptr<Service>;

}  // namespace terminals
