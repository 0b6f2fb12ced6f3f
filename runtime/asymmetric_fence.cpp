#include "asymmetric_fence.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace dj::detail {
namespace {

long membarrier(int command) noexcept { return ::syscall(__NR_membarrier, command, 0, 0); }

bool register_membarrier() noexcept {
  const long supported = membarrier(MEMBARRIER_CMD_QUERY);
  if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
  return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

bool query_global_membarrier() noexcept {
  const long supported = membarrier(MEMBARRIER_CMD_QUERY);
  return supported >= 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED);
}

bool register_global_membarrier() noexcept {
  return query_global_membarrier() &&
         membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
}

const bool g_global_membarrier = query_global_membarrier();

}  // namespace

extern const bool g_asymmetric_fences = register_membarrier();
extern const bool g_shared_light_fences = register_global_membarrier();

bool shared_heavy_fence() noexcept {
  if (g_global_membarrier && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0) return true;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return false;
}

void heavy_fence() noexcept {
  if (!g_asymmetric_fences || membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

}  // namespace dj::detail
