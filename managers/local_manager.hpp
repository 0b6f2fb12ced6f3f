// LocalManager: workers as child processes of the master on this host (Boost.Process).
#pragma once

#include <string>

#include "cluster_manager.hpp"

namespace dj {

class LocalManager : public ClusterManager {
 public:
  // `exename`: the dj-worker executable. Throws: NotFound when it is missing or not executable.
  explicit LocalManager(std::string exename);
  std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) override;
  std::string describe() const override { return "local"; }

  // The dj-worker installed next to libdj (or $DJ_WORKER when set).
  static std::string default_exename();

 private:
  std::string exename_;
};

}  // namespace dj
