// A dj plugin whose descriptor lists no kernels.
#include <dj/plugin_abi.h>

static const dj_plugin_descriptor kDescriptor = {DJ_PLUGIN_ABI_VERSION, 0, "empty_table", nullptr};

extern "C" __attribute__((visibility("default"))) const dj_plugin_descriptor*
dj_plugin_descriptor_v1(void) {
  return &kDescriptor;
}
