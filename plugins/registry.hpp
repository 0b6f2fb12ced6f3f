// KernelRegistry: the kernels this process can run, filled from plugin images (shared-object
// bytes) that arrive from the master. Each image is loaded from an anonymous memfd, so no file
// of the user's ever needs to exist on a worker's disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dj/plugin_abi.h"

namespace dj::detail {

class PluginImage;  // One dlopen'ed memfd; lives until the registry is destroyed.

struct KernelEntry {
  std::string name;
  std::string signature;
  uint64_t signature_id = 0;  // fnv1a64(signature): what compact calls carry
  std::string plugin_name;  // The file name the master loaded it from.
  dj_invoke_fn invoke = nullptr;
  dj_invoke_numbers_fn invoke_numbers = nullptr;  // null unless it takes and returns numbers
};

class KernelRegistry {
 public:
  struct LoadOutcome {
    bool already_loaded = false;
    uint32_t kernel_count = 0;
  };

  KernelRegistry();
  ~KernelRegistry();
  KernelRegistry(const KernelRegistry&) = delete;
  KernelRegistry& operator=(const KernelRegistry&) = delete;

  // Loads a plugin image whose sha256 the sender announced. Same digest as an earlier load: a
  // no-op. Kernels of a new image replace same-named ones for calls resolved afterwards.
  // Throws: dj::Error naming `display_name` and the reason (digest mismatch, not ELF, dlopen
  // error such as an unresolved symbol, no DJ_PLUGIN descriptor, ABI version, no kernels).
  // Thread-safety: safe against concurrent find().
  LoadOutcome load(const std::string& display_name, const std::string& sha256,
                   const std::string& bytes);

  // The kernel registered under kernel_id(name), or null. The entry stays valid for the
  // registry's lifetime even if a reload replaces it.
  std::shared_ptr<const KernelEntry> find(uint64_t kernel_id) const;

  // Bumped by every load that adds kernels: a find() result cached under one version holds
  // until the version changes.
  uint64_t version() const { return version_.load(std::memory_order_acquire); }

  size_t plugin_count() const;

  // Names of the kernels of the image with this digest (empty if not loaded).
  std::vector<std::string> kernel_names(const std::string& sha256) const;

 private:
  mutable std::shared_mutex mu_;
  std::vector<std::unique_ptr<PluginImage>> images_;                      // guarded by mu_
  std::unordered_map<std::string, PluginImage*> by_digest_;               // guarded by mu_
  std::unordered_map<uint64_t, std::shared_ptr<const KernelEntry>> kernels_;  // guarded by mu_
  std::atomic<uint64_t> version_{0};
};

// Reads a plugin file. Throws: NotFound/InvalidArgument naming the path and the reason.
std::string read_plugin_file(const std::string& path);

}  // namespace dj::detail
