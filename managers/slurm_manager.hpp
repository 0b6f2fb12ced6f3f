// SlurmManager: workers as the tasks of one srun job step (Distributed.jl's SlurmManager).
#pragma once

#include <string>

#include "dj/dj.hpp"

namespace dj {

class SlurmManager : public ClusterManager {
 public:
  SlurmManager(SlurmOptions options, std::string default_exename);
  // Runs `srun -n count` (a step of $SLURM_JOB_ID when set, else a job of its own) and waits
  // until every task printed its pid. Throws: InvalidArgument (SLURM refused the job, with
  // srun's reason), Disconnected (not started within options.timeout); nothing is left queued
  // or running then.
  std::vector<std::unique_ptr<LaunchedWorker>> launch(int count) override;
  std::string describe() const override { return describe_; }

 private:
  SlurmOptions options_;
  std::string exename_;
  std::string describe_ = "slurm";
};

}  // namespace dj
