// The SSH and SLURM managers live in libdj_remote.so, loaded by the master the first time it
// adds remote workers. Workers and local-only masters never map libssh and OpenSSL: linked
// into libdj they raised every worker's idle RSS from 5.3 to 8.5 MiB and its start-up time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dj/dj.hpp"

namespace dj::detail {

struct SshManagerHandle {
  std::unique_ptr<ClusterManager> manager;
  int fixed_count = 0;  // workers asked for, 0 when some host says kAutoCount
};

// Throws: what the managers' constructors throw, or Internal naming libdj_remote.so and the
// loader's error when it cannot be loaded.
SshManagerHandle make_ssh_manager(const std::vector<Machine>& machines, const SshOptions& options,
                                  const std::string& default_exename);
std::unique_ptr<ClusterManager> make_slurm_manager(const SlurmOptions& options,
                                                   const std::string& default_exename);

}  // namespace dj::detail

// The entry points libdj_remote.so exports (C names, C++ types: both sides are dj's own build).
extern "C" {
dj::ClusterManager* dj_remote_new_ssh(const std::vector<dj::Machine>* machines,
                                      const dj::SshOptions* options,
                                      const std::string* default_exename, int* fixed_count);
dj::ClusterManager* dj_remote_new_slurm(const dj::SlurmOptions* options,
                                        const std::string* default_exename);
}
