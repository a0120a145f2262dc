#pragma once

/// @file function.hpp
/// `MoveOnlyFunction`: a type-erased callable that may own move-only state (a `unique_ptr`, a
/// socket). `std::function` requires copyable targets; C++23's `std::move_only_function` is not
/// available in C++20.

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace terminals {

template <class Signature>
class MoveOnlyFunction;

template <class R, class... Args>
class MoveOnlyFunction<R(Args...)> {
 public:
  MoveOnlyFunction() noexcept = default;
  MoveOnlyFunction(std::nullptr_t) noexcept {}  // NOLINT

  template <class F, class D = std::decay_t<F>,
            class = std::enable_if_t<!std::is_same_v<D, MoveOnlyFunction> &&
                                     std::is_invocable_r_v<R, D&, Args...>>>
  MoveOnlyFunction(F&& f) {  // NOLINT: implicit like std::function
    if constexpr (fits_inline<D>()) {
      ::new (static_cast<void*>(&storage_)) D(std::forward<F>(f));
      ops_ = &inline_ops<D>;
    } else {
      *reinterpret_cast<D**>(&storage_) = new D(std::forward<F>(f));
      ops_ = &heap_ops<D>;
    }
  }

  MoveOnlyFunction(MoveOnlyFunction&& o) noexcept : ops_(o.ops_) {
    if (ops_) {
      ops_->move(&o.storage_, &storage_);
      o.ops_ = nullptr;
    }
  }
  MoveOnlyFunction& operator=(MoveOnlyFunction&& o) noexcept {
    if (this != &o) {
      reset();
      if (o.ops_) {
        o.ops_->move(&o.storage_, &storage_);
        ops_ = o.ops_;
        o.ops_ = nullptr;
      }
    }
    return *this;
  }
  MoveOnlyFunction& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }
  MoveOnlyFunction(const MoveOnlyFunction&) = delete;
  MoveOnlyFunction& operator=(const MoveOnlyFunction&) = delete;
  ~MoveOnlyFunction() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  R operator()(Args... args) {
    return ops_->call(&storage_, std::forward<Args>(args)...);
  }

 private:
  struct alignas(std::max_align_t) Storage {
    unsigned char bytes[3 * sizeof(void*)];
  };
  struct Ops {
    R (*call)(void*, Args&&...);
    void (*move)(void* from, void* to) noexcept;
    void (*destroy)(void*) noexcept;
  };

  template <class D>
  static constexpr bool fits_inline() {
    return sizeof(D) <= sizeof(Storage) && alignof(D) <= alignof(Storage) &&
           std::is_nothrow_move_constructible_v<D>;
  }

  template <class D>
  static constexpr Ops inline_ops = {
      [](void* s, Args&&... a) -> R { return (*static_cast<D*>(s))(std::forward<Args>(a)...); },
      [](void* from, void* to) noexcept {
        ::new (to) D(std::move(*static_cast<D*>(from)));
        static_cast<D*>(from)->~D();
      },
      [](void* s) noexcept { static_cast<D*>(s)->~D(); }};

  template <class D>
  static constexpr Ops heap_ops = {
      [](void* s, Args&&... a) -> R { return (**static_cast<D**>(s))(std::forward<Args>(a)...); },
      [](void* from, void* to) noexcept { *static_cast<D**>(to) = *static_cast<D**>(from); },
      [](void* s) noexcept { delete *static_cast<D**>(s); }};

  void reset() noexcept {
    if (ops_) {
      auto* ops = ops_;
      ops_ = nullptr;
      ops->destroy(&storage_);
    }
  }

  Storage storage_;
  const Ops* ops_ = nullptr;
};

/// A completion callback: runs exactly once, on the loop thread, never inside the call that
/// started the operation.
template <class T>
class Result;
template <class T>
using Callback = MoveOnlyFunction<void(Result<T>)>;

/// A unit of work posted to or deferred on a loop.
using Task = MoveOnlyFunction<void()>;

}  // namespace terminals
