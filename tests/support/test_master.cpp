// A master program for tests that need the master in a process of its own:
//   test_master nworkers         print nworkers() and workers() (used under dj-run -p N)
//   test_master exit CODE        exit with CODE after touching the cluster
//   test_master hold N           add N workers, print their OS pids, then wait to be killed
//   test_master return N         add N workers, print their OS pids, return from main
//   test_master throw N          add N workers, print their OS pids, throw out of main
//   test_master busy PLUGIN      add a worker, start a long kernel, print "ready", and report
//                                how fetching it ended (for the Ctrl-C test)
//   test_master shared N         add N workers, create a SharedArray on them, print its segment
//                                name and the workers' OS pids, then wait to be killed
//   test_master shared-return N  the same, then return from main
#include <dj/dj.hpp>

#include <unistd.h>

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
    for (;;) ::pause();
  }
  if (mode == "return") return 0;
  if (mode == "throw") throw std::runtime_error("test_master: thrown out of main");
  std::fprintf(stderr, "test_master: unknown mode '%s'\n", mode.c_str());
  return 2;
}
