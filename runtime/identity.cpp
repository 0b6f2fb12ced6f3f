// myid(), host identity and the few /proc readings dj needs.
#include "identity.hpp"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>

#include "dj/dj.hpp"
#include "sys.hpp"

namespace dj {
namespace {
std::atomic<int> g_myid{1};  // Set once by dj-worker's handshake; 1 on the master.
}

int myid() { return g_myid.load(std::memory_order_relaxed); }

namespace detail {

void set_myid(int pid) { g_myid.store(pid, std::memory_order_relaxed); }

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string host_identity() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(in, boot);
  struct stat st {};
  std::string shm = ::stat("/dev/shm", &st) == 0
                        ? std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)
                        : "none";
  return boot + "/" + shm;
}

unsigned long long rss_bytes() {
  std::ifstream in("/proc/self/statm");
  unsigned long long size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<unsigned long long>(::sysconf(_SC_PAGESIZE));
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("getrandom", std::to_string(n) + " bytes");
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

}  // namespace detail
}  // namespace dj
