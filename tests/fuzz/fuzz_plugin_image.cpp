// libFuzzer target: the plugin checks (plugins/image_checks.cpp) a worker applies to bytes it
// received: the ELF checks that run before dlopen, on the input as an image, and the
// descriptor reader on a descriptor table laid out from the input (kernel count, names,
// signatures, missing entries). Fuzzed bytes are never dlopen'ed.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "dj/error.hpp"
#include "dj/serialize.hpp"
#include "plugins/image_checks.hpp"

namespace {

void some_kernel(const dj_arg*, size_t, dj_sink*) {}

// Input layout for the descriptor: byte 0 picks the ABI version (0, 1 or 2), byte 1 the
// kernel count (0..8), byte 2 a mask of entries without an invoke function, byte 3 whether
// the table is missing; the rest, split at NUL bytes, gives names and signatures in turn.
void read_descriptor_from(const uint8_t* data, size_t size) {
  if (size < 4) return;
  std::vector<std::string> words;
  std::string word;
  for (size_t i = 4; i < size; ++i) {
    if (data[i] == 0) {
      words.push_back(word);
      word.clear();
    } else {
      word += static_cast<char>(data[i]);
    }
  }
  words.push_back(word);
  uint32_t count = data[1] % 9;
  std::vector<dj_kernel_entry> table(count);
  for (uint32_t i = 0; i < count; ++i) {
    size_t n = 2 * i, s = 2 * i + 1;
    table[i].name = n < words.size() ? words[n].c_str() : nullptr;
    table[i].signature = s < words.size() ? words[s].c_str() : nullptr;
    table[i].invoke = (data[2] >> i) & 1 ? nullptr : &some_kernel;
  }
  dj_plugin_descriptor d{data[0] % 3u, count, "fuzz", data[3] & 1 ? nullptr : table.data()};
  try {
    auto entries = dj::detail::read_descriptor("fuzz.so", &d);
    // Accepted: every entry is there, complete, and no two share a kernel id.
    if (entries.size() != count) std::abort();
    std::set<uint64_t> ids;
    for (const auto& e : entries) {
      if (!e.invoke || !ids.insert(dj::detail::kernel_id(e.name)).second) std::abort();
    }
  } catch (const dj::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    dj::detail::check_elf_image("fuzz.so",
                                std::string(reinterpret_cast<const char*>(data), size));
  } catch (const dj::Error&) {
  }
  read_descriptor_from(data, size);
  return 0;
}
