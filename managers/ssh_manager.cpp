// SshManager: fans out to the hosts (at most max_parallel connecting at once), then gathers
// their workers in machine order, or fails as a whole naming every host that failed.
#include "ssh_manager.hpp"

#include <atomic>
#include <thread>

#include "ssh_host.hpp"

namespace dj {

SshManager::SshManager(std::vector<Machine> machines, SshOptions options,
                       std::string default_exename)
    : machines_(std::move(machines)), options_(std::move(options)),
      exename_(options_.exename.empty() ? std::move(default_exename) : options_.exename) {
  if (machines_.empty()) throw Error(ErrorKind::InvalidArgument, "addprocs: no SSH host given");
  if (options_.max_parallel < 1) {
    throw Error(ErrorKind::InvalidArgument, "addprocs: SshOptions::max_parallel must be at "
                                            "least 1, got " + std::to_string(options_.max_parallel));
  }
}

int SshManager::fixed_count() const {
  int total = 0;
  for (const auto& m : machines_) {
    if (m.count == kAutoCount) return 0;
    total += m.count;
  }
  return total;
}

std::string SshManager::describe() const {
  std::string hosts;
  for (const auto& m : machines_) {
    if (hosts.find(m.host) == std::string::npos) hosts += (hosts.empty() ? "" : ", ") + m.host;
  }
  return "ssh " + hosts;
}

std::vector<std::unique_ptr<LaunchedWorker>> SshManager::launch(int count) {
  if (count != 0 && count != fixed_count()) {
    throw Error(ErrorKind::InvalidArgument,
                "SshManager: asked for " + std::to_string(count) + " workers but the machines "
                "list " + std::to_string(fixed_count()));
  }
  struct Outcome {
    std::vector<std::unique_ptr<LaunchedWorker>> workers;
    std::string error;
    ErrorKind kind = ErrorKind::Internal;
  };
  std::vector<Outcome> outcomes(machines_.size());
  std::atomic<size_t> next{0};
  auto connect_hosts = [&] {
    for (size_t i = next++; i < machines_.size(); i = next++) {
      try {
        outcomes[i].workers =
            detail::launch_on_host({machines_[i], options_, exename_});
      } catch (const Error& e) {
        outcomes[i].error = e.what();
        outcomes[i].kind = e.kind();
      } catch (const std::exception& e) {
        outcomes[i].error = machines_[i].host + ": " + e.what();
      }
    }
  };
  size_t threads = std::min(machines_.size(), static_cast<size_t>(options_.max_parallel));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(connect_hosts);
  connect_hosts();
  for (auto& t : pool) t.join();

  std::string failures;
  int failed = 0;
  ErrorKind kind = ErrorKind::Internal;
  for (auto& o : outcomes) {
    if (o.error.empty()) continue;
    if (failed++ == 0) kind = o.kind;
    failures += (failures.empty() ? "" : "; ") + o.error;
  }
  if (failed > 0) {
    // `outcomes` going out of scope stops the workers started on the hosts that succeeded.
    throw Error(kind, std::to_string(failed) + " of " + std::to_string(machines_.size()) +
                          " SSH hosts failed: " + failures);
  }
  std::vector<std::unique_ptr<LaunchedWorker>> all;
  for (auto& o : outcomes) {
    for (auto& w : o.workers) all.push_back(std::move(w));
  }
  return all;
}

}  // namespace dj
