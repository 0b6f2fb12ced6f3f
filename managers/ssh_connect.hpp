// Opening an authenticated libssh session to one host. Private to managers/ssh*.cpp (the only
// files that may include libssh).
#pragma once

#include <libssh/libssh.h>

#include <string>

#include "ssh_host.hpp"

namespace dj::detail {

// A connected, host-key-verified, authenticated session; ssh_free'd on destruction.
class SshSession {
 public:
  // Throws: dj::Error "HOST: ..." — Disconnected (cannot connect), InvalidArgument (host key
  // unknown or changed, login refused). Blocks: up to plan.options.connect_timeout.
  explicit SshSession(const SshLaunchPlan& plan);
  ~SshSession();
  SshSession(const SshSession&) = delete;
  SshSession& operator=(const SshSession&) = delete;

  ssh_session get() const { return session_; }
  const std::string& name() const { return name_; }  // The host as the user named it.
  // The master's address on this connection (where the host's packets to us arrive).
  const std::string& local_address() const { return local_address_; }

 private:
  void verify_host_key(const SshLaunchPlan& plan);
  void authenticate(const SshLaunchPlan& plan);
  std::string error_text() const;

  ssh_session session_ = nullptr;
  std::string name_;
  std::string target_;  // "user@address:port" for messages
  std::string local_address_;
};

}  // namespace dj::detail
