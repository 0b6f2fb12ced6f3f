// Plugin loading (memfd + dlopen, descriptor validation) and the kernel table built from it.
#include "registry.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>

#include "dj/serialize.hpp"
#include "plugins/image_checks.hpp"
#include "sha256.hpp"
#include "sys.hpp"

namespace dj::detail {

// Owns the memfd and the dlopen handle. The memfd stays open while the module is loaded: glibc
// matches loaded objects by path, and a reused /proc/self/fd/N would return an older plugin.
// An image lives as long as its registry (a worker's lives until the process ends), so no
// kernel of it can be running when it is closed.
class PluginImage {
 public:
  PluginImage(int memfd, void* handle, const dj_plugin_descriptor* descriptor)
      : memfd_(memfd), handle_(handle), descriptor_(descriptor) {}
  ~PluginImage() {
    if (handle_) ::dlclose(handle_);
    close_quietly(memfd_);
  }
  PluginImage(const PluginImage&) = delete;
  PluginImage& operator=(const PluginImage&) = delete;
  const dj_plugin_descriptor& descriptor() const { return *descriptor_; }
  void set_descriptor(const dj_plugin_descriptor* d) { descriptor_ = d; }

 private:
  int memfd_;
  void* handle_;
  const dj_plugin_descriptor* descriptor_;
};

namespace {

Error load_error(const std::string& name, const std::string& reason,
                 ErrorKind kind = ErrorKind::InvalidArgument) {
  return Error(kind, "plugin " + name + ": " + reason);
}

// Checks, writes to a sealed memfd, dlopens, and reads the descriptor into `entries`.
std::unique_ptr<PluginImage> open_image(const std::string& name, const std::string& bytes,
                                        std::vector<KernelEntry>& entries) {
  check_elf_image(name, bytes);
  int fd = ::memfd_create("dj-plugin", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw_errno("memfd_create", "plugin " + name);
  try {
    write_full(fd, bytes.data(), bytes.size());
    sys_check("fcntl", "F_ADD_SEALS plugin " + name, [&] {
      return ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    });
  } catch (...) {
    close_quietly(fd);
    throw;
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = ::dlerror();
    close_quietly(fd);
    std::string reason = why ? why : "dlopen failed";
    // dlerror names the memfd path; the user knows the plugin by its file name.
    auto at = reason.find(path + ": ");
    if (at != std::string::npos) reason.erase(at, path.size() + 2);
    throw load_error(name, "cannot be loaded: " + reason);
  }
  auto image = std::make_unique<PluginImage>(fd, handle, nullptr);
  auto entry = reinterpret_cast<dj_plugin_entry_fn>(::dlsym(handle, DJ_PLUGIN_SYMBOL));
  if (!entry) {
    throw load_error(name, std::string("no kernels registered (it does not export ") +
                               DJ_PLUGIN_SYMBOL + "; add DJ_PLUGIN(...) to one source file)");
  }
  const dj_plugin_descriptor* d = entry();
  entries = read_descriptor(name, d);
  image->set_descriptor(d);
  return image;
}

}  // namespace

KernelRegistry::KernelRegistry() = default;
KernelRegistry::~KernelRegistry() = default;

KernelRegistry::LoadOutcome KernelRegistry::load(const std::string& display_name,
                                                 const std::string& digest,
                                                 const std::string& bytes) {
  {
    std::shared_lock lock(mu_);
    auto it = by_digest_.find(digest);
    if (it != by_digest_.end()) return {true, it->second->descriptor().kernel_count};
  }
  if (sha256(bytes) != digest) {
    throw load_error(display_name, "image bytes do not match their announced sha256 " +
                                       to_hex(digest) + "; refused");
  }
  std::vector<KernelEntry> entries;
  auto image = open_image(display_name, bytes, entries);
  const dj_plugin_descriptor& d = image->descriptor();

  std::unordered_map<uint64_t, std::shared_ptr<const KernelEntry>> fresh;
  for (auto& e : entries) {
    uint64_t id = kernel_id(e.name);
    fresh.emplace(id, std::make_shared<KernelEntry>(std::move(e)));
  }

  std::unique_lock lock(mu_);
  if (by_digest_.count(digest)) return {true, d.kernel_count};  // Lost a race: same image.
  for (auto& [id, entry] : fresh) {
    auto it = kernels_.find(id);
    if (it != kernels_.end() && it->second->name != entry->name) {
      throw load_error(display_name, "kernel '" + entry->name + "' has the same id as '" +
                                         it->second->name + "' from " + it->second->plugin_name +
                                         "; rename one");
    }
  }
  for (auto& [id, entry] : fresh) kernels_[id] = entry;
  version_.fetch_add(1, std::memory_order_release);
  by_digest_[digest] = image.get();
  images_.push_back(std::move(image));
  return {false, d.kernel_count};
}

std::shared_ptr<const KernelEntry> KernelRegistry::find(uint64_t id) const {
  std::shared_lock lock(mu_);
  auto it = kernels_.find(id);
  return it == kernels_.end() ? nullptr : it->second;
}

size_t KernelRegistry::plugin_count() const {
  std::shared_lock lock(mu_);
  return images_.size();
}

std::vector<std::string> KernelRegistry::kernel_names(const std::string& digest) const {
  std::shared_lock lock(mu_);
  std::vector<std::string> names;
  auto it = by_digest_.find(digest);
  if (it == by_digest_.end()) return names;
  const dj_plugin_descriptor& d = it->second->descriptor();
  for (uint32_t i = 0; i < d.kernel_count; ++i) names.emplace_back(d.kernels[i].name);
  return names;
}

std::string read_plugin_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    throw Error(err == ENOENT ? ErrorKind::NotFound : ErrorKind::InvalidArgument,
                "plugin " + path + ": cannot open (" + std::strerror(err) + ")");
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes;
}

}  // namespace dj::detail
