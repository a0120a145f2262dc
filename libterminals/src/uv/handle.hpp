#pragma once

// Owning wrapper for a libuv handle. libuv handles cannot move and their memory may be reused
// only from the close callback, so the handle lives in its own heap node which uv_close frees.
// Destroying the wrapper clears `data` first: callbacks that still arrive (write requests
// cancelled by the close) see a null owner and must not touch it.

#include <uv.h>

#include <utility>

namespace terminals::detail {

template <class H>
class UvHandle {
 public:
  UvHandle() : h_(new H{}) {}
  ~UvHandle() { close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  H* get() const noexcept { return h_; }
  H* operator->() const noexcept { return h_; }
  uv_handle_t* handle() const noexcept { return reinterpret_cast<uv_handle_t*>(h_); }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  /// Marks the handle initialised (uv_*_init succeeded): from now on it must be closed.
  void set_initialized() noexcept { initialized_ = true; }

  /// Closes and releases the handle. Safe to call twice.
  void close() noexcept {
    if (!h_) return;
    H* h = std::exchange(h_, nullptr);
    auto* uh = reinterpret_cast<uv_handle_t*>(h);
    uh->data = nullptr;
    if (!initialized_) {
      delete h;
      return;
    }
    // A borrowed host loop may still be running; the handle may already be closing if libuv
    // was told elsewhere (never in our code), so guard anyway.
    if (uv_is_closing(uh)) return;
    uv_close(uh, [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
  }

 private:
  H* h_;
  bool initialized_ = false;
};

/// The object that owns a handle, recovered from `data` (null once the owner is gone).
template <class T, class H>
T* owner_of(H* h) noexcept {
  return static_cast<T*>(reinterpret_cast<uv_handle_t*>(h)->data);
}

}  // namespace terminals::detail
