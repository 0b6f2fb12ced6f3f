// libFuzzer target: argument and result decoding, as a worker decodes a call's payload and the
// master a pmap batch's results: parse_args (runtime/arg_blob.cpp) and dj::ser::from_bytes
// (dj/serialize.hpp) of representative types: string, vector<double>, nested vectors, a tuple,
// dj::Matrix, a DJ_STRUCT. A value that decodes must encode to a form that decodes to the same
// bytes again (and, without bools, to exactly its input).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "arg_blob.hpp"
#include "fuzz_types.hpp"

namespace {

template <class T>
void decode_as(const unsigned char* p, size_t n, bool exact) {
  try {
    T v = dj::ser::from_bytes<T>(p, n);
    std::string once = dj::ser::to_bytes(v);
    if (exact && once != std::string_view(reinterpret_cast<const char*>(p), n)) std::abort();
    std::string twice = dj::ser::to_bytes(dj::ser::from_bytes<T>(once));
    if (twice != once) std::abort();
  } catch (const dj::Error&) {
  }
}

void decode_value(const unsigned char* p, size_t n) {
  using namespace dj::fuzz;
  decode_as<Str>(p, n, true);
  decode_as<Doubles>(p, n, true);
  decode_as<Nested>(p, n, true);
  decode_as<Tuple>(p, n, true);
  decode_as<Mat>(p, n, true);
  decode_as<Particles>(p, n, false);  // bools: any nonzero byte reads as true
}

void decode_args(const char* data, size_t size) {
  try {
    for (const auto& a : dj::detail::parse_args(data, size)) {
      if (a.is_ref) continue;
      if (a.offset > size || a.size > size - a.offset) std::abort();
      decode_value(reinterpret_cast<const unsigned char*>(data) + a.offset, a.size);
    }
  } catch (const dj::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* chars = reinterpret_cast<const char*>(data);
  // A call's argument list.
  decode_args(chars, size);
  // A pmap batch: elements, each an argument list.
  std::string_view batch(chars, size);
  size_t at = 0;
  try {
    for (int i = 0; i < 64 && at < batch.size(); ++i) {
      std::string_view element = dj::detail::next_batch_element(batch, at);
      decode_args(element.data(), element.size());
    }
  } catch (const dj::Error&) {
  }
  // A batch Result as the master indexes it, for the count the first byte says.
  if (size > 0) {
    std::string payload(chars + 1, size - 1);
    try {
      for (const auto& slot : dj::detail::index_batch_results(payload, data[0])) {
        if (slot.offset > payload.size() || slot.size > payload.size() - slot.offset) std::abort();
      }
    } catch (const dj::Error&) {
    }
  }
  // The whole input as one value.
  decode_value(data, size);
  return 0;
}
