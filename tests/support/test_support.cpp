// Implementation of the test helpers (plain POSIX and /proc; no dj internals).
#include "test_support.hpp"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

namespace dj::test {

std::string plugin(const std::string& name) {
  return std::string(DJ_TEST_LIB_DIR) + "/lib" + name + ".so";
}

std::string program(const std::string& name) { return std::string(DJ_TEST_BIN_DIR) + "/" + name; }

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

namespace {
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Fields of /proc/<pid>/stat after the command name: state is [0], ppid is [1].
std::vector<std::string> stat_fields(pid_t pid) {
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  std::vector<std::string> fields;
  if (close == std::string::npos) return fields;
  std::istringstream rest(stat.substr(close + 2));
  std::string f;
  while (rest >> f) fields.push_back(f);
  return fields;
}
}  // namespace

bool process_alive(pid_t pid) {
  auto f = stat_fields(pid);
  return !f.empty() && f[0] != "Z" && f[0] != "X";
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    auto f = stat_fields(static_cast<pid_t>(pid));
    if (f.size() > 1 && f[0] != "Z" && std::stol(f[1]) == parent) {
      out.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> children_named(const std::string& exe_name) {
  std::vector<pid_t> out;
  for (pid_t pid : children_of(::getpid())) {
    std::string comm = read_file("/proc/" + std::to_string(pid) + "/comm");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    if (comm == exe_name.substr(0, 15)) out.push_back(pid);
  }
  return out;
}

RunResult run_command(const std::string& command) {
  RunResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

StartedProcess start_with_stdout(const std::string& command) {
  int out[2];
  if (::pipe(out) != 0) return {};
  pid_t child = ::fork();
  if (child == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::string cmd = "exec " + command;
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  return {child, out[0]};
}

std::string read_until(int fd, const std::string& marker) {
  std::string text;
  char buf[512];
  while (marker.empty() || text.find(marker) == std::string::npos) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r <= 0) break;
    text.append(buf, static_cast<size_t>(r));
  }
  return text;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "dj-test-XXXXXX").string();
  char* made = ::mkdtemp(tmpl.data());
  path_ = made ? made : "";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

void copy_file(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

}  // namespace dj::test

namespace dj::test {

std::vector<std::string> shm_entries_of(pid_t master) {
  std::vector<std::string> names;
  std::string prefix = "dj-" + std::to_string(master) + "-";
  DIR* d = ::opendir("/dev/shm");
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  ::closedir(d);
  return names;
}

bool maps_segment(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find("/dev/shm" + name);
    if (at == std::string::npos) continue;
    char after = at + 8 + name.size() < line.size() ? line[at + 8 + name.size()] : '\0';
    if (after == '\0' || after == ' ') return true;  // not a longer name with this prefix
  }
  return false;
}

int memfds_mapped(long pid, const std::string& memfd_name) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:" + memfd_name) != std::string::npos) ++n;
  }
  return n;
}

bool stop_process(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  return eventually([pid] {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
  });
}

}  // namespace dj::test
