// The sweep of stale SharedArray segments: segments live in /dev/shm until unlinked, and a
// master killed between creating one and unlinking it (while workers map it) cannot unlink.
#include "shm/sweep.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace dj::detail {
namespace {

// The master pid of "dj-<pid>-<n>", or 0 when the name is not of that shape.
long master_pid_of(const std::string& name) {
  if (name.rfind("dj-", 0) != 0) return 0;
  size_t dash = name.find('-', 3);
  if (dash == std::string::npos || dash == 3 || dash + 1 == name.size()) return 0;
  for (size_t i = 3; i < name.size(); ++i) {
    if (i != dash && (name[i] < '0' || name[i] > '9')) return 0;
  }
  return std::strtol(name.c_str() + 3, nullptr, 10);
}

bool is_alive(long pid) { return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM; }

}  // namespace

std::vector<std::string> sweep_stale_segments(const std::string& dir, long own_pid) {
  std::vector<std::string> removed;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return removed;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    long pid = master_pid_of(name);
    if (pid > 0 && (pid == own_pid || !is_alive(pid))) stale.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : stale) {
    if (::unlink((dir + "/" + name).c_str()) == 0) removed.push_back(name);
  }
  return removed;
}

}  // namespace dj::detail
