// dj-run: `julia -p N script.jl` for dj. Runs PROGRAM as the master with N local workers
// already added (the runtime reads DJ_PROCS on first use), and exits with PROGRAM's status.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "shm/sweep.hpp"

namespace {

constexpr const char* kUsage =
    "usage: dj-run [-p N] PROGRAM [ARGS...]\n"
    "\n"
    "Runs PROGRAM, a dj master program, with N local workers already added\n"
    "(like `julia -p N script.jl`). The exit status is PROGRAM's.\n"
    "\n"
    "  -p, --procs N   number of local workers to start (1..4096; default 0)\n"
    "  -h, --help      show this help\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "dj-run: %s\n\n%s", message.c_str(), kUsage);
  return 2;
}

bool parse_count(const char* text, long& out) {
  char* end = nullptr;
  errno = 0;
  long n = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || n < 1 || n > 4096) return false;
  out = n;
  return true;
}

// True when `program` names an executable file, directly or through PATH.
bool is_runnable(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    size_t colon = dirs.find(':', start);
    std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos
                                                                    : colon - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return true;
    }
    if (colon == std::string::npos) return false;
    start = colon + 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  long procs = 0;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "-p" || arg == "--procs") {
      if (i + 1 >= argc) return usage_error(arg + " needs a worker count");
      if (!parse_count(argv[++i], procs)) {
        return usage_error(std::string("invalid worker count '") + argv[i] +
                           "' (expected an integer from 1 to 4096)");
      }
      continue;
    }
    if (arg.rfind("-p", 0) == 0 && arg.size() > 2) {
      if (!parse_count(arg.c_str() + 2, procs)) {
        return usage_error("invalid worker count '" + arg.substr(2) +
                           "' (expected an integer from 1 to 4096)");
      }
      continue;
    }
    if (arg == "--") {
      ++i;
      break;
    }
    if (!arg.empty() && arg[0] == '-') return usage_error("unknown option '" + arg + "'");
    break;
  }
  if (i >= argc) return usage_error("no PROGRAM given");
  std::string program = argv[i];
  if (!is_runnable(program)) {
    std::fprintf(stderr, "dj-run: cannot run '%s': %s\n", program.c_str(),
                 errno == EACCES ? "permission denied" : "no such executable file");
    return 127;
  }
  // Segments that dead masters left in /dev/shm (the runtime sweeps too, at master start).
  dj::detail::sweep_stale_segments();
  if (procs > 0) ::setenv("DJ_PROCS", std::to_string(procs).c_str(), 1);
  else ::unsetenv("DJ_PROCS");
  ::execvp(program.c_str(), argv + i);
  std::fprintf(stderr, "dj-run: cannot run '%s': %s\n", program.c_str(), std::strerror(errno));
  return 127;
}
