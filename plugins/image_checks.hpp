// The checks a plugin image passes on its way in: its bytes before they reach dlopen (ELF
// headers that fit the image), and its descriptor table after (ABI version, complete entries,
// names that do not collide). Kept apart from the loader so that the fuzzer can reach them
// without ever dlopen'ing fuzzed bytes.
#pragma once

#include <string>
#include <vector>

#include "dj/plugin_abi.h"
#include "plugins/registry.hpp"

namespace dj::detail {

// Checks that `bytes` are a 64-bit little-endian ELF shared object for this kind of machine
// whose program headers, and every segment dlopen would map, lie inside the image (a segment
// past the end would fault with SIGBUS on first touch inside dlopen).
// Throws: dj::Error(InvalidArgument) "plugin NAME: ..." naming what is wrong.
void check_elf_image(const std::string& name, const std::string& bytes);

// Reads a loaded plugin's descriptor into kernel entries (plugin_name = `name`).
// Throws: dj::Error(InvalidArgument) "plugin NAME: ..." for a null descriptor, another ABI
// version, no kernels, an incomplete entry, or two names with the same kernel id.
std::vector<KernelEntry> read_descriptor(const std::string& name, const dj_plugin_descriptor* d);

}  // namespace dj::detail
