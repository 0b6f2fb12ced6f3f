// The master's reader role on one worker connection: whoever holds it reads the connection
// (the I/O thread, or a user thread borrowing it for its own answer). Only ever tried, never
// waited for. A thread that makes direct calls (master_direct.cpp) keeps it *parked* between
// its calls, so a loop of them takes and gives it with no locked instruction; any other thread
// that tries it takes it back, unless the parked owner is in a call on the connection right
// now (its hazard slot names the connection: the asymmetric fences pair the two).
#pragma once

#include <atomic>
#include <cstdint>

#include "asymmetric_fence.hpp"

namespace dj::detail {

class ReadRole {
 public:
  // A direct caller's mark: `using_link` names the connection it is in a call on, if any.
  struct Owner {
    std::atomic<const void*> using_link{nullptr};
  };

  explicit ReadRole(const void* link) noexcept : link_(link) {}
  ReadRole(const ReadRole&) = delete;
  ReadRole& operator=(const ReadRole&) = delete;

  // Takes the role (for std::unique_lock's try_to_lock): free, parked by `self` (the caller's
  // own mark, or null), or parked by an owner that is not in a call on this connection.
  inline bool try_lock(const Owner* self = nullptr) noexcept;
  void unlock() noexcept { state_.store(kFree, std::memory_order_release); }

  // A direct call by the owner of `self`, whose mark already names this connection (with a
  // light fence after it). kParked: it holds the role, parked by it before; kTaken: it took the
  // role and must park() it when the call ends; kRefused: another thread holds it.
  enum class Took { kRefused, kParked, kTaken };
  Took take_for_call(const Owner* self) noexcept {
    if (state_.load(std::memory_order_relaxed) == kParked &&
        parked_by_.load(std::memory_order_relaxed) == self) {
      return Took::kParked;
    }
    uint32_t expected = kFree;
    return state_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire)
               ? Took::kTaken
               : Took::kRefused;
  }
  // Ends a direct call that took the role (kTaken): it stays with `self`'s owner, parked. (A
  // call that found it parked leaves it as it is: a thread taking it back may be between
  // marking it and checking the owner's mark.)
  void park(const Owner* self) noexcept {
    parked_by_.store(self, std::memory_order_relaxed);
    state_.store(kParked, std::memory_order_release);
  }
  bool parked() const noexcept {
    return state_.load(std::memory_order_relaxed) == kParked;
  }

 private:
  enum : uint32_t { kFree, kHeld, kParked, kRevoking };
  const void* const link_;
  std::atomic<uint32_t> state_{kFree};
  std::atomic<const Owner*> parked_by_{nullptr};
};

inline bool ReadRole::try_lock(const Owner* self) noexcept {
  uint32_t state = kFree;
  if (state_.compare_exchange_strong(state, kHeld, std::memory_order_acquire)) return true;
  if (state != kParked) return false;
  if (self && parked_by_.load(std::memory_order_relaxed) == self) {
    // Parked by this thread, which is not in a direct call now: no fence needed.
    return state_.compare_exchange_strong(state, kHeld, std::memory_order_acquire);
  }
  if (!state_.compare_exchange_strong(state, kRevoking, std::memory_order_acquire)) return false;
  heavy_fence();  // The other half of the light fence after the owner's mark (DirectUse).
  const Owner* owner = parked_by_.load(std::memory_order_relaxed);
  if (owner->using_link.load(std::memory_order_acquire) == link_) {
    state_.store(kParked, std::memory_order_release);  // In a call on it: it reads it now.
    return false;
  }
  state_.store(kHeld, std::memory_order_relaxed);
  return true;
}

}  // namespace dj::detail
