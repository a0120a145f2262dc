#pragma once
// The policy store shared between terminals.PolicyStore and the orchestrators that resolve
// policies from it (the store is thread-safe).

#include <memory>
#include <mutex>

#include "terminals/policy_store.hpp"
#include "terminals/quantity.hpp"

namespace terminals::python {

class PolicyStoreHandle {
 public:
  PolicyStoreHandle(PolicyStorePtr store, Caps caps) : store_(std::move(store)), caps_(std::move(caps)) {}
  /// The store, or null once closed (an orchestrator using it may still hold this handle).
  std::shared_ptr<PolicyStore> get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return store_;
  }
  /// Releases the store (and its directory lock) once no call is using it.
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    store_.reset();
  }
  const Caps& caps() const { return caps_; }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<PolicyStore> store_;
  Caps caps_;
};

}  // namespace terminals::python
