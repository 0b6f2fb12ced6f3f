// Loads libdj_remote.so (next to libdj) on first use and builds its managers.
#include <dlfcn.h>

#include <mutex>

#include "remote_managers.hpp"

namespace dj::detail {
namespace {

void* remote_library() {
  static std::mutex mu;
  static void* handle = nullptr;  // never closed: managers and their workers use its code
  std::lock_guard lock(mu);
  if (handle) return handle;
  Dl_info info{};
  std::string path = "libdj_remote.so";
  if (::dladdr(reinterpret_cast<void*>(&remote_library), &info) && info.dli_fname) {
    std::string lib = info.dli_fname;
    auto slash = lib.rfind('/');
    if (slash != std::string::npos) path = lib.substr(0, slash + 1) + "libdj_remote.so";
  }
  handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = ::dlerror();
    throw Error(ErrorKind::Internal, "cannot load the SSH/SLURM managers from " + path + ": " +
                                         (why ? why : "dlopen failed"));
  }
  return handle;
}

template <class Fn>
Fn entry(const char* name) {
  void* sym = ::dlsym(remote_library(), name);
  if (!sym) throw Error(ErrorKind::Internal, std::string("libdj_remote.so lacks ") + name);
  return reinterpret_cast<Fn>(sym);
}

}  // namespace

SshManagerHandle make_ssh_manager(const std::vector<Machine>& machines, const SshOptions& options,
                                  const std::string& default_exename) {
  auto make = entry<decltype(&dj_remote_new_ssh)>("dj_remote_new_ssh");
  SshManagerHandle h;
  h.manager.reset(make(&machines, &options, &default_exename, &h.fixed_count));
  return h;
}

std::unique_ptr<ClusterManager> make_slurm_manager(const SlurmOptions& options,
                                                   const std::string& default_exename) {
  auto make = entry<decltype(&dj_remote_new_slurm)>("dj_remote_new_slurm");
  return std::unique_ptr<ClusterManager>(make(&options, &default_exename));
}

}  // namespace dj::detail
