// libFuzzer target: the message decoder (runtime/wire/codec.cpp) on arbitrary header bytes,
// aligned and unaligned (codec copies unaligned input). A message that decodes must encode
// and decode back to the same message type with the same bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "wire/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dj::wire;
  std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    Message m = decode(bytes);
    (void)message_name(m);
    std::string again = encode(m);
    Message m2 = decode(again);
    if (m2.index() != m.index() || encode(m2) != again) std::abort();
  } catch (const dj::Error&) {
  }
  // The same bytes one byte off alignment.
  std::string shifted(size + 1, '\0');
  std::memcpy(shifted.data() + 1, data, size);
  try {
    (void)decode(shifted.data() + 1, size);
  } catch (const dj::Error&) {
  }
  return 0;
}
