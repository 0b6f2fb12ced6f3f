// dj-run: `julia -p N script.jl` (and --machine-file) for dj. Runs PROGRAM as the master with
// its workers already added: the runtime reads DJ_PROCS, DJ_HOSTS, DJ_MACHINE_FILE, DJ_SLURM_N
// and DJ_SLURM_ARGS on first use. Exits with PROGRAM's status.
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
    "usage: dj-run [-p N] [--hosts LIST | --machine-file FILE]\n"
    "              [--slurm -n N [-- SRUN_OPTION=VALUE...]] PROGRAM [ARGS...]\n"
    "\n"
    "Runs PROGRAM, a dj master program, with its workers already added\n"
    "(like `julia -p N --machine-file FILE script.jl`). The exit status is PROGRAM's.\n"
    "\n"
    "  -p, --procs N         number of local workers to start (1..4096; default 0)\n"
    "  --hosts LIST          SSH hosts, comma-separated machine specs: h1,2*h2,auto*h3\n"
    "  --machine-file FILE   SSH hosts from a Distributed.jl machine file\n"
    "                        (SSH config: $DJ_SSH_CONFIG, else ~/.ssh/config)\n"
    "  --slurm -n N          N workers started by srun (a step of $SLURM_JOB_ID when set);\n"
    "                        srun options follow `--`, each as one word (--partition=debug)\n"
    "  -h, --help            show this help\n";

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
  long procs = 0, slurm_n = 0;
  bool slurm = false;
  std::string hosts, machine_file, srun_args;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--hosts" || arg == "--machine-file") {
      if (i + 1 >= argc || !*argv[i + 1]) return usage_error(arg + " needs a value");
      if (!hosts.empty() || !machine_file.empty()) {
        return usage_error("give only one of --hosts and --machine-file");
      }
      (arg == "--hosts" ? hosts : machine_file) = argv[++i];
      continue;
    }
    if (arg == "--slurm") {
      slurm = true;
      continue;
    }
    if (arg == "-n") {
      if (!slurm) return usage_error("-n is the worker count of --slurm: write --slurm -n N");
      if (i + 1 >= argc || !parse_count(argv[++i], slurm_n)) {
        return usage_error("invalid --slurm worker count (expected -n with 1 to 4096)");
      }
      continue;
    }
    if (arg == "--" && slurm) {  // srun options, up to PROGRAM (the first word without '-').
      for (++i; i < argc && argv[i][0] == '-'; ++i) srun_args += std::string(argv[i]) + "\n";
      break;
    }
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
  if (slurm && slurm_n == 0) return usage_error("--slurm needs a worker count: --slurm -n N");
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
  auto set_or_unset = [](const char* name, const std::string& value) {
    if (value.empty()) ::unsetenv(name);
    else ::setenv(name, value.c_str(), 1);
  };
  set_or_unset("DJ_HOSTS", hosts);
  set_or_unset("DJ_MACHINE_FILE", machine_file);
  set_or_unset("DJ_SLURM_N", slurm ? std::to_string(slurm_n) : "");
  set_or_unset("DJ_SLURM_ARGS", srun_args);
  ::execvp(program.c_str(), argv + i);
  std::fprintf(stderr, "dj-run: cannot run '%s': %s\n", program.c_str(), std::strerror(errno));
  return 127;
}
