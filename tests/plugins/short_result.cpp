// A buggy plugin written without DJ_PLUGIN: its kernels claim to return a double (8 bytes) and
// answer 4. The master must refuse such an answer by its size, on every path a numeric result
// takes (the same-host express slot, the numbers-only entry, the master itself). And one whose
// numbers-only entry claims more bytes than the ABI's 16: the worker must not send them.
#include <cstring>
#include <dj/plugin_abi.h>

namespace {
// A result of sizeof(T) bytes through an invoke entry's sink.
template <class T>
void answer(dj_sink* sink, T value) {
  std::memcpy(sink->reserve(sink->ctx, sizeof value), &value, sizeof value);
}
// Through invoke: a 4-byte result.
void short_invoke(const dj_arg*, size_t, dj_sink* sink) { answer(sink, 0.5f); }
// Through invoke: the right answer, 1.0 (the full path's run).
void one_invoke(const dj_arg*, size_t, dj_sink* sink) { answer(sink, 1.0); }
// Through invoke_numbers: 4 bytes written, 4 returned.
long short_numbers(const unsigned char*, size_t, unsigned char* out, dj_sink*) {
  const float half = 0.5f;
  std::memcpy(out, &half, sizeof half);
  return sizeof half;
}
// Through invoke_numbers (the express path's run): 8 bytes written, 4096 claimed.
long long_numbers(const unsigned char*, size_t, unsigned char* out, dj_sink*) {
  const double one = 1.0;
  std::memcpy(out, &one, sizeof one);
  return 4096;
}
const dj_kernel_entry kEntries[] = {
    {"short_invoke", "(f64)->f64", &short_invoke, nullptr},
    {"short_numbers", "(f64)->f64", &short_invoke, &short_numbers},
    {"long_numbers", "(f64)->f64", &one_invoke, &long_numbers},
};
const dj_plugin_descriptor kDescriptor = {DJ_PLUGIN_ABI_VERSION, 3, "short_result", kEntries};
}  // namespace

extern "C" __attribute__((visibility("default"))) const dj_plugin_descriptor*
dj_plugin_descriptor_v1(void) {
  return &kDescriptor;
}
