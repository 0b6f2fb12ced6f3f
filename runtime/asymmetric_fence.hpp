// Asymmetric fences: a pair of threads that must each see the other's store before their own
// load (a store-load "Dekker" pair) normally both pay a locked instruction or an mfence. When
// one side runs on every call and the other only now and then, the frequent side can pay a
// compiler barrier (light_fence) and the rare side a system call that makes every thread of
// the process execute a full barrier (heavy_fence: membarrier's private expedited command,
// Linux 4.14+). Where membarrier is refused (an old kernel, a seccomp filter), both are full
// fences: still correct, only slower.
//
// The rule for using a pair: thread A stores x, light_fence(), loads y; thread B stores y,
// heavy_fence(), loads x. Then A sees B's store or B sees A's (or both).
#pragma once

#include <atomic>

namespace dj::detail {

// Whether heavy_fence is the membarrier system call: decided while the library loads, before
// any thread that uses the fences starts (false until then: both sides are then full fences).
extern const bool g_asymmetric_fences;

// A compiler barrier when the other side of the pair pays the heavy fence, else a full fence.
inline void light_fence_if(bool paired_with_heavy) noexcept {
  if (paired_with_heavy) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

inline void light_fence() noexcept { light_fence_if(g_asymmetric_fences); }

// A full barrier on every running thread of this process (a few microseconds).
void heavy_fence() noexcept;

// The same pair between two processes (a ring's express slot, wire/ring.cpp): the frequent side
// pays shared_light_fence, the rare side shared_heavy_fence, membarrier's global expedited
// command (Linux 4.16+: a full barrier on every running thread of every process registered for
// it; ~0.6 us here). Whether this process registered, at load: only then may its light side be
// a compiler barrier, else it is a full fence.
extern const bool g_shared_light_fences;

inline void shared_light_fence() noexcept { light_fence_if(g_shared_light_fences); }

// A full barrier here and on every running thread of the processes registered for it. Returns
// false when membarrier is refused (then only this thread's full fence was executed): a peer's
// light fence may then not pair with it, and the caller must not sleep without a timeout.
bool shared_heavy_fence() noexcept;

}  // namespace dj::detail
