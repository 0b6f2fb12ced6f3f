// A plugin "built against an incompatible dj": its descriptor claims another ABI version.
#include <dj/plugin_abi.h>

static void never_called(const dj_arg*, size_t, dj_sink*) {}
static const dj_kernel_entry kEntries[] = {{"old_kernel", "()->void", &never_called, nullptr}};
static const dj_plugin_descriptor kDescriptor = {999, 1, "bad_abi", kEntries};

extern "C" __attribute__((visibility("default"))) const dj_plugin_descriptor*
dj_plugin_descriptor_v1(void) {
  return &kDescriptor;
}
