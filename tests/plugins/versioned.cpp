// Built twice, as libversioned_v1.so and libversioned_v2.so: a "rebuilt" plugin for reload tests.
#include <dj/kernel.hpp>

int32_t version() { return DJ_TEST_VERSION; }

DJ_PLUGIN("versioned", DJ_KERNEL(version))
