// The workers dj-run asks for through the environment: DJ_HOSTS (comma-separated machine
// specs), DJ_MACHINE_FILE, DJ_SLURM_N and DJ_SLURM_ARGS (srun options, one per line). Each is
// read once (called from Cluster::instance(), so it must not call it) and unset, so neither workers nor programs the master starts inherit it.
#include <cstdlib>
#include <sstream>

#include "cluster.hpp"
#include "managers/local_manager.hpp"
#include "managers/remote_managers.hpp"

namespace dj::detail {
namespace {

std::string take_env(const char* name) {
  const char* v = std::getenv(name);
  std::string value = v ? v : "";
  ::unsetenv(name);
  return value;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

}  // namespace

void Cluster::add_workers_from_env() {
  std::string hosts = take_env("DJ_HOSTS"), file = take_env("DJ_MACHINE_FILE");
  std::string slurm_n = take_env("DJ_SLURM_N"), srun_args = take_env("DJ_SLURM_ARGS");
  if (!hosts.empty() || !file.empty()) {
    std::vector<Machine> machines;
    if (!file.empty()) machines = read_machine_file(file);
    for (const auto& spec : split(hosts, ',')) machines.emplace_back(spec);
    SshOptions options;
    if (const char* config = std::getenv("DJ_SSH_CONFIG")) options.ssh_config = config;
    auto ssh = make_ssh_manager(machines, options, LocalManager::default_exename());
    add_workers(*ssh.manager, ssh.fixed_count, options.timeout);
  }
  if (!slurm_n.empty()) {
    SlurmOptions options;
    options.srun_args = split(srun_args, '\n');
    int n = std::atoi(slurm_n.c_str());
    if (n < 1) throw Error(ErrorKind::InvalidArgument, "DJ_SLURM_N='" + slurm_n + "' is not a count");
    auto manager = make_slurm_manager(options, LocalManager::default_exename());
    add_workers(*manager, n, options.timeout);
  }
}

}  // namespace dj::detail
