// libdj_remote.so's entry points: constructors of the SSH and SLURM managers.
#include "remote_managers.hpp"
#include "slurm_manager.hpp"
#include "ssh_manager.hpp"

extern "C" __attribute__((visibility("default"))) dj::ClusterManager* dj_remote_new_ssh(
    const std::vector<dj::Machine>* machines, const dj::SshOptions* options,
    const std::string* default_exename, int* fixed_count) {
  auto manager = std::make_unique<dj::SshManager>(*machines, *options, *default_exename);
  *fixed_count = manager->fixed_count();
  return manager.release();
}

extern "C" __attribute__((visibility("default"))) dj::ClusterManager* dj_remote_new_slurm(
    const dj::SlurmOptions* options, const std::string* default_exename) {
  return new dj::SlurmManager(*options, *default_exename);
}
