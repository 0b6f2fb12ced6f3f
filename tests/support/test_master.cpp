// A master program for tests that need the master in a process of its own:
//   test_master nworkers         print nworkers() and workers() (used under dj-run -p N)
//   test_master exit CODE        exit with CODE after touching the cluster
//   test_master hold N           add N workers, print their OS pids and SLURM job names (when
//                                they have one), then wait to be killed
//   test_master return N         add N workers, print their OS pids, return from main
//   test_master throw N          add N workers, print their OS pids, throw out of main
//   test_master busy PLUGIN      add a worker, start a long kernel, print "ready", and report
//                                how fetching it ended (for the Ctrl-C test)
//   test_master shared N         add N workers, create a SharedArray on them, print its segment
//                                name and the workers' OS pids, then wait to be killed
//   test_master shared-return N  the same, then return from main
//   test_master shared-big N E   add N workers, try a SharedArray<double> of E elements and
//                                print how it went, then show a small one still works
//   test_master addprocs-try N   try addprocs(N), print how it went, then show the workers
//                                (or one more) answer
//   test_master heavy PLUGIN N HOSTS S
//                                add N local workers, workers on the comma-separated SSH HOSTS
//                                ("-": none; $DJ_SSH_CONFIG) and S SLURM workers, all with
//                                $DJ_TEST_TAG in their environment; map a SharedArray, start
//                                long kernels on every worker, print the segment and the
//                                workers' OS pids, then wait to be killed
#include <dj/dj.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void print_worker_pids() {
  std::printf("worker-os-pids:");
  for (int pid : dj::workers()) std::printf(" %ld", dj::worker_info(pid).os_pid);
  std::printf("\n");
  std::fflush(stdout);
}

// The SLURM job name of each local worker that has one, from its environment.
void print_worker_slurm_jobs() {
  std::printf("worker-slurm-jobs:");
  for (int pid : dj::workers()) {
    std::string path = "/proc/" + std::to_string(dj::worker_info(pid).os_pid) + "/environ";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) continue;
    std::string env;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) env.append(buf, n);
    std::fclose(f);
    const std::string key = std::string(1, '\0') + "SLURM_JOB_NAME=";
    env.insert(0, 1, '\0');
    size_t at = env.find(key);
    if (at != std::string::npos) std::printf(" %s", env.c_str() + at + key.size());
  }
  std::printf("\n");
  std::fflush(stdout);
}

void print_error(const char* what, const dj::Error& e) {
  std::printf("%s threw %s: %s\n", what, dj::to_string(e.kind()), e.what());
  std::fflush(stdout);
}

int shared_big(int n, long long elements) {
  if (n > 0) dj::addprocs(n);
  try {
    dj::SharedArray<double> big({static_cast<size_t>(elements)});
    std::printf("created %zu elements\n", big.length());
  } catch (const dj::Error& e) {
    print_error("SharedArray", e);
  }
  dj::SharedArray<double> small({1000});
  small[999] = 1.0;
  std::printf("small array works: %s\n", small[999] == 1.0 ? "yes" : "no");
  return 0;
}

int addprocs_try(int n) {
  try {
    std::printf("added %zu workers\n", dj::addprocs(n).size());
  } catch (const dj::Error& e) {
    print_error("addprocs", e);
  }
  std::vector<int> pids = dj::workers();
  if (pids == std::vector<int>{1}) pids = dj::addprocs(1);  // room for one after a failure?
  bool ok = true;
  for (int pid : pids) ok &= dj::worker_stats(pid).rss_bytes > 0;
  std::printf("%zu workers answer: %s\n", pids.size(), ok ? "yes" : "no");
  return 0;
}

int heavy(const char* plugin, int n, const std::string& hosts, int slurm) {
  const char* tag = std::getenv("DJ_TEST_TAG");
  if (n > 0) dj::addprocs(n);
  if (hosts != "-") {
    dj::SshOptions o;
    if (const char* config = std::getenv("DJ_SSH_CONFIG")) o.ssh_config = config;
    if (tag) o.env = {{"DJ_TEST_TAG", tag}};
    std::vector<dj::Machine> machines;
    for (size_t at = 0; at <= hosts.size();) {
      size_t comma = std::min(hosts.find(',', at), hosts.size());
      machines.emplace_back(hosts.substr(at, comma - at));
      at = comma + 1;
    }
    dj::addprocs(machines, o);
  }
  if (slurm > 0) {
    dj::SlurmOptions o;  // srun passes the environment (DJ_TEST_TAG) to the tasks
    o.job_name = std::string("dj-death-") + (tag ? tag : "untagged");
    dj::addprocs_slurm(slurm, o);
  }
  auto spin = dj::everywhere(plugin).kernel<int64_t(int64_t)>("spin_ms");
  dj::SharedArray<double> s({1 << 16});
  for (int pid : dj::workers()) dj::remote_do(spin, pid, int64_t{60000});
  std::printf("segment=%s ", s.segment_name().c_str());
  print_worker_pids();
  for (;;) ::pause();
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  int n = argc > 2 ? std::atoi(argv[2]) : 0;
  if (mode == "nworkers") {
    std::printf("nworkers=%d workers=", dj::nworkers());
    for (int pid : dj::workers()) std::printf("%d,", pid);
    std::printf("\n");
    return 0;
  }
  if (mode == "busy") {
    dj::addprocs(1);
    auto k = dj::everywhere(argv[2]).kernel<int32_t(int32_t)>("work_until_interrupted");
    auto f = dj::spawnat(2, k, 60000);
    std::printf("ready\n");
    std::fflush(stdout);
    try {
      dj::fetch(f);
      std::printf("finished\n");
    } catch (const dj::Error& e) {
      std::printf("fetch threw %s: %s\n", dj::to_string(e.kind()), e.what());
    }
    std::printf("worker still there: %s\n", dj::workers() == std::vector<int>{2} ? "yes" : "no");
    return 0;
  }
  if (mode == "shared-big") return shared_big(n, std::atoll(argv[3]));
  if (mode == "addprocs-try") return addprocs_try(n);
  if (mode == "heavy") {
    return heavy(argv[2], argc > 3 ? std::atoi(argv[3]) : 0, argc > 4 ? argv[4] : "-",
                 argc > 5 ? std::atoi(argv[5]) : 0);
  }
  if (mode == "exit") {
    dj::workers();
    return n;
  }
  if (n > 0) dj::addprocs(n);
  if (mode == "shared" || mode == "shared-return") {
    dj::SharedArray<double> s({1000});
    for (size_t i = 0; i < s.length(); ++i) s[i] = static_cast<double>(i);
    std::printf("segment=%s ", s.segment_name().c_str());
    print_worker_pids();
    if (mode == "shared") {
      for (;;) ::pause();
    }
    return 0;
  }
  print_worker_pids();
  if (mode == "hold") {
    print_worker_slurm_jobs();
    for (;;) ::pause();
  }
  if (mode == "return") return 0;
  if (mode == "throw") throw std::runtime_error("test_master: thrown out of main");
  std::fprintf(stderr, "test_master: unknown mode '%s'\n", mode.c_str());
  return 2;
}
