#include <dj/kernel.hpp>

int64_t triple(int64_t x) { return 3 * x; }

DJ_PLUGIN("consumer_kernels", DJ_KERNEL(triple))
