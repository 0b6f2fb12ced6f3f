// SshManager: workers on SSH hosts (libssh), Distributed.jl's SSHManager.
#pragma once

#include <string>
#include <vector>

#include "dj/dj.hpp"

namespace dj {

class SshManager : public ClusterManager {
 public:
  // `exename`: dj-worker path on the hosts when options.exename is empty.
  // Throws: InvalidArgument (no machine, max_parallel < 1).
  SshManager(std::vector<Machine> machines, SshOptions options, std::string default_exename);
  // Connects to every host (max_parallel at a time) and starts its workers. `count` must be
  // the sum of the machines' counts, or 0 when some count is kAutoCount (known only once
  // connected). Throws: dj::Error listing each failed host with its cause; the workers already
  // started on the other hosts are stopped before it returns.
  std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) override;
  std::string describe() const override;
  // Sum of the counts, or 0 if one of them is kAutoCount.
  int fixed_count() const;

 private:
  std::vector<Machine> machines_;
  SshOptions options_;
  std::string exename_;
};

}  // namespace dj
