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

inline void light_fence() noexcept {
  if (g_asymmetric_fences) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

// A full barrier on every running thread of this process (a few microseconds).
void heavy_fence() noexcept;

}  // namespace dj::detail
