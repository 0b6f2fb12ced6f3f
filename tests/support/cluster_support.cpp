// Cluster test helpers: /proc scans for tagged processes and SSH sockets, test-host sessions,
// and squeue queries. Real processes only: nothing here fakes a host or a scheduler.
#include "cluster_support.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <sstream>

#include "test_support.hpp"

namespace dj::test {

SshFixture::SshFixture(std::chrono::milliseconds connect_timeout) : tag(new_tag()) {
  options.ssh_config = ssh_env("DJ_SSH_CONFIG");
  options.exename = program("dj-worker");
  options.env = {{"DJ_TEST_TAG", tag}};
  options.connect_timeout = connect_timeout;
  options.timeout = std::chrono::milliseconds(20000);
}

void SshFixture::require_nothing_left() const {
  REQUIRE(eventually([&] { return processes_tagged(tag).empty(); }));
  REQUIRE(eventually([] { return open_ssh_connections() == 0; }));
  REQUIRE(workers() == std::vector<int>{1});
}
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> pids;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') pids.push_back(std::atoi(e->d_name));
  }
  if (d) ::closedir(d);
  return pids;
}

pid_t parent_of(pid_t pid) {
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string state;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

}  // namespace

std::string required_env(const std::string& name, const std::string& script) {
  const char* v = std::getenv(name.c_str());
  if (!v || !*v) {
    FAIL("$" << name << " is not set: start the test infrastructure first, e.g. "
                        "eval \"$(../shared/scripts/" << script << ")\" (scripts/dev.sh test "
                        "does it)");
  }
  return v;
}

std::string ssh_env(const std::string& name) { return required_env(name, "ssh-hosts-up 3"); }

std::string new_tag() {
  static int n = 0;
  return "t" + std::to_string(::getpid()) + "x" + std::to_string(++n);
}

std::vector<pid_t> processes_tagged(const std::string& tag) {
  std::string needle = "DJ_TEST_TAG=" + tag;
  std::vector<pid_t> found;
  for (pid_t pid : all_pids()) {
    std::string env = slurp("/proc/" + std::to_string(pid) + "/environ");
    for (size_t at = 0; at < env.size();) {
      size_t end = env.find('\0', at);
      if (end == std::string::npos) end = env.size();
      if (env.compare(at, end - at, needle) == 0 && process_alive(pid)) found.push_back(pid);
      at = end + 1;
    }
  }
  return found;
}

int open_ssh_connections() {
  std::set<std::string> inodes;  // sockets in state ESTABLISHED (01) to port 22 (0016)
  for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
    auto rows = lines_of(slurp(table));
    for (size_t i = 1; i < rows.size(); ++i) {
      std::istringstream row(rows[i]);
      std::string sl, local, remote, state, queues, tr, retr, uid, timeout, inode;
      row >> sl >> local >> remote >> state >> queues >> tr >> retr >> uid >> timeout >> inode;
      if (state == "01" && remote.size() > 5 && remote.substr(remote.size() - 5) == ":0016") {
        inodes.insert(inode);
      }
    }
  }
  int count = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    char target[256] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    if (::readlink(link.c_str(), target, sizeof target - 1) <= 0) continue;
    std::string t = target;
    if (t.rfind("socket:[", 0) == 0 && inodes.count(t.substr(8, t.size() - 9))) ++count;
  }
  if (d) ::closedir(d);
  return count;
}

int kill_host_sessions(const std::string& host) {
  std::string dir = ssh_env("DJ_SSH_DIR");
  pid_t unshare = std::atoi(slurp(dir + "/" + host + ".pid").c_str());
  REQUIRE(unshare > 0);
  std::vector<pid_t> pids = all_pids(), sshd;
  for (pid_t p : pids) {
    if (parent_of(p) == unshare) sshd.push_back(p);
  }
  REQUIRE(sshd.size() == 1);
  // Every descendant of the host's sshd, collected first and then killed at once.
  std::set<pid_t> doomed, frontier{sshd[0]};
  while (!frontier.empty()) {
    std::set<pid_t> next;
    for (pid_t p : pids) {
      if (frontier.count(parent_of(p)) && !doomed.count(p)) next.insert(p);
    }
    doomed.insert(next.begin(), next.end());
    frontier = next;
  }
  for (pid_t p : doomed) ::kill(p, SIGKILL);
  return static_cast<int>(doomed.size());
}

std::vector<pid_t> ssh_sessions_above(const std::vector<pid_t>& pids) {
  auto comm = [](pid_t p) {
    std::string c = slurp("/proc/" + std::to_string(p) + "/comm");
    while (!c.empty() && c.back() == '\n') c.pop_back();
    return c;
  };
  std::set<pid_t> sessions;
  for (pid_t p : pids) {
    for (pid_t up = parent_of(p); up > 1; up = parent_of(up)) {
      pid_t above = parent_of(up);
      if (comm(up) == "sshd" && comm(above) == "sshd") sessions.insert(up);  // not the listener
    }
  }
  return {sessions.begin(), sessions.end()};
}

std::vector<std::string> slurm_jobs_named(const std::string& job_name) {
  auto r = run_command("squeue -h -o '%i %j %T' -n '" + job_name + "'");
  REQUIRE(r.status == 0);
  return lines_of(r.output);
}

std::vector<std::string> slurm_steps_named(const std::string& job_name) {
  auto r = run_command("squeue -h -s -o '%i %j'");
  REQUIRE(r.status == 0);
  std::vector<std::string> out;
  for (auto& line : lines_of(r.output)) {
    if (line.find(job_name) != std::string::npos) out.push_back(line);
  }
  return out;
}

}  // namespace dj::test
