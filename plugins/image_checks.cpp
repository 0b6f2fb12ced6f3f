// ELF header checks before dlopen, descriptor checks after.
#include "plugins/image_checks.hpp"

#include <elf.h>

#include <cstring>
#include <unordered_map>

#include "dj/error.hpp"
#include "dj/serialize.hpp"

namespace dj::detail {
namespace {

Error image_error(const std::string& name, const std::string& reason) {
  return Error(ErrorKind::InvalidArgument, "plugin " + name + ": " + reason);
}

}  // namespace

void check_elf_image(const std::string& name, const std::string& bytes) {
  if (bytes.size() < 4 || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0) {
    throw image_error(name, "not an ELF shared object (" + std::to_string(bytes.size()) +
                                " bytes, no ELF magic)");
  }
  if (bytes.size() < sizeof(Elf64_Ehdr) || bytes[EI_CLASS] != ELFCLASS64 ||
      bytes[EI_DATA] != ELFDATA2LSB) {
    throw image_error(name, "not a 64-bit little-endian ELF object");
  }
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  if (eh.e_type != ET_DYN) throw image_error(name, "not a shared object (ELF type " +
                                                       std::to_string(eh.e_type) + ")");
  if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_AARCH64) {
    throw image_error(name, "built for another machine (ELF machine " +
                                std::to_string(eh.e_machine) + ")");
  }
  const uint64_t size = bytes.size();
  auto fits = [&](uint64_t off, uint64_t len) { return off <= size && len <= size - off; };
  if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
      !fits(eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr))) {
    throw image_error(name, "truncated or corrupt (program headers outside the " +
                                std::to_string(size) + "-byte image)");
  }
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, bytes.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
    if ((ph.p_type == PT_LOAD || ph.p_type == PT_DYNAMIC) && !fits(ph.p_offset, ph.p_filesz)) {
      throw image_error(name, "truncated or corrupt (segment " + std::to_string(i) +
                                  " needs bytes up to " +
                                  std::to_string(ph.p_offset + ph.p_filesz) + ", the image has " +
                                  std::to_string(size) + ")");
    }
  }
}

std::vector<KernelEntry> read_descriptor(const std::string& name, const dj_plugin_descriptor* d) {
  if (!d) throw image_error(name, "its descriptor function returned null");
  if (d->abi_version != DJ_PLUGIN_ABI_VERSION) {
    throw image_error(name, "built against an incompatible dj (plugin ABI " +
                                std::to_string(d->abi_version) + ", this dj has ABI " +
                                std::to_string(DJ_PLUGIN_ABI_VERSION) + "); rebuild it");
  }
  if (d->kernel_count == 0 || !d->kernels) {
    throw image_error(name, "no kernels registered (DJ_PLUGIN lists none)");
  }
  std::vector<KernelEntry> entries;
  std::unordered_map<uint64_t, size_t> by_id;  // kernel id -> index in entries
  for (uint32_t i = 0; i < d->kernel_count; ++i) {
    const dj_kernel_entry& k = d->kernels[i];
    if (!k.name || !k.signature || !k.invoke) {
      throw image_error(name, "kernel entry " + std::to_string(i) + " is incomplete");
    }
    auto [it, inserted] = by_id.emplace(kernel_id(k.name), entries.size());
    if (!inserted) {
      throw image_error(name, "kernel names '" + entries[it->second].name + "' and '" +
                                  k.name + "' collide (listed twice?)");
    }
    entries.push_back(
        KernelEntry{k.name, k.signature, fnv1a64(k.signature), name, k.invoke, k.invoke_numbers});
  }
  return entries;
}

}  // namespace dj::detail
