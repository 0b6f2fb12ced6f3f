// SshSession: connect, check the host key against known_hosts (strict by default) and log in
// with keys only (ssh-agent, then identity files). Every failure names the host and the cause.
#include "ssh_connect.hpp"

#include <libssh/callbacks.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>

#include "net.hpp"

namespace dj::detail {
namespace {

// libssh would ask this for a key's passphrase: dj never prompts, so encrypted keys not in
// the agent are skipped.
int refuse_passphrase(const char*, char*, size_t, int, int, void*) { return -1; }
ssh_callbacks_struct g_no_prompt = [] {
  ssh_callbacks_struct cb{};
  cb.size = sizeof cb;
  cb.auth_function = refuse_passphrase;
  return cb;
}();

std::string option_string(ssh_session s, ssh_options_e option) {
  char* value = nullptr;
  if (ssh_options_get(s, option, &value) != SSH_OK || !value) return "";
  std::string out = value;
  ssh_string_free_char(value);
  return out;
}

}  // namespace

SshSession::SshSession(const SshLaunchPlan& plan) : name_(plan.machine.host) {
  static std::once_flag init;
  std::call_once(init, [] {
    // OpenSSL would otherwise free itself in an atexit handler registered after the cluster's,
    // so it would run first, while SSH pump threads still encrypt (a crash at exit).
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
    ssh_init();
  });
  const Machine& m = plan.machine;
  const SshOptions& o = plan.options;
  session_ = ssh_new();
  if (!session_) throw Error(ErrorKind::ResourceExhausted, name_ + ": ssh_new failed");
  auto set = [&](ssh_options_e option, const void* value, const char* what) {
    if (ssh_options_set(session_, option, value) != SSH_OK) {
      throw Error(ErrorKind::InvalidArgument,
                  name_ + ": invalid SSH option " + what + ": " + error_text());
    }
  };
  try {
    // The host first, so that the config file's "Host" blocks match it (libssh 0.10).
    set(SSH_OPTIONS_HOST, m.host.c_str(), "host");
    const char* config = o.ssh_config.empty() ? nullptr : o.ssh_config.c_str();
    if (ssh_options_parse_config(session_, config) != SSH_OK) {
      throw Error(ErrorKind::InvalidArgument,
                  name_ + ": cannot read SSH config " + (config ? config : "~/.ssh/config") +
                      ": " + error_text());
    }
    // What the call names explicitly wins over the config file.
    if (!m.user.empty()) set(SSH_OPTIONS_USER, m.user.c_str(), "user");
    if (m.port != 0) {
      unsigned port = static_cast<unsigned>(m.port);
      set(SSH_OPTIONS_PORT, &port, "port");
    }
    if (!o.identity_file.empty()) set(SSH_OPTIONS_IDENTITY, o.identity_file.c_str(), "identity");
    if (!o.known_hosts.empty()) set(SSH_OPTIONS_KNOWNHOSTS, o.known_hosts.c_str(), "known_hosts");
    long timeout_s = std::max<long>(1, o.connect_timeout.count() / 1000);
    long timeout_us = (o.connect_timeout.count() % 1000) * 1000;
    set(SSH_OPTIONS_TIMEOUT, &timeout_s, "timeout");
    set(SSH_OPTIONS_TIMEOUT_USEC, &timeout_us, "timeout");
    int on = 1;  // Nagle costs ~40 ms per authentication round trip.
    set(SSH_OPTIONS_NODELAY, &on, "nodelay");
    int off = 0;  // Already parsed above; do not let ssh_connect parse ~/.ssh/config again.
    set(SSH_OPTIONS_PROCESS_CONFIG, &off, "process_config");
    // g_no_prompt is initialised once (size set) above: ssh_callbacks_init here would write the
    // shared struct from every connecting thread.
    ssh_set_callbacks(session_, &g_no_prompt);

    unsigned port = 22;
    ssh_options_get_port(session_, &port);
    std::string user = option_string(session_, SSH_OPTIONS_USER);
    if (user.empty()) {  // libssh fills in the local user only when connecting.
      const passwd* pw = ::getpwuid(::getuid());
      user = pw ? pw->pw_name : "?";
    }
    target_ = user + "@" +
              option_string(session_, SSH_OPTIONS_HOST) + ":" + std::to_string(port);
    if (ssh_connect(session_) != SSH_OK) {
      throw Error(ErrorKind::Disconnected,
                  name_ + ": cannot connect to " + target_ + " within " +
                      std::to_string(o.connect_timeout.count()) + " ms: " + error_text());
    }
    detail::detect_dead_peer(ssh_get_fd(session_));  // a host whose network vanished
    local_address_ = detail::local_address(ssh_get_fd(session_));
    local_address_ = local_address_.substr(0, local_address_.rfind(':'));
    verify_host_key(plan);
    authenticate(plan);
  } catch (...) {
    ssh_disconnect(session_);
    ssh_free(session_);
    throw;
  }
}

SshSession::~SshSession() {
  ssh_disconnect(session_);
  ssh_free(session_);
}

std::string SshSession::error_text() const {
  const char* e = ssh_get_error(session_);
  return e && *e ? e : "unknown libssh error";
}

void SshSession::verify_host_key(const SshLaunchPlan& plan) {
  // ssh_connect succeeds whatever the key: only a known, matching key lets us go on.
  std::string file = option_string(session_, SSH_OPTIONS_KNOWNHOSTS);
  std::string where = " in " + (file.empty() ? std::string("known_hosts") : file);
  switch (ssh_session_is_known_server(session_)) {
    case SSH_KNOWN_HOSTS_OK:
      return;
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
      throw Error(ErrorKind::InvalidArgument,
                  name_ + ": host key of " + target_ + " CHANGED: it does not match the key" +
                      where + " (possible man-in-the-middle attack); refusing to log in");
    case SSH_KNOWN_HOSTS_NOT_FOUND:
    case SSH_KNOWN_HOSTS_UNKNOWN:
      if (!plan.options.strict_host_key_checking) return;
      throw Error(ErrorKind::InvalidArgument,
                  name_ + ": host key of " + target_ + " is unknown: not" + where +
                      " (strict host key checking; add the key, e.g. with ssh-keyscan, or set "
                      "strict_host_key_checking = false)");
    case SSH_KNOWN_HOSTS_ERROR:
    default:
      throw Error(ErrorKind::InvalidArgument,
                  name_ + ": cannot check the host key of " + target_ + where + ": " +
                      error_text());
  }
}

void SshSession::authenticate(const SshLaunchPlan& plan) {
  (void)plan;
  // Agent first, then the identity files (explicit, config, ~/.ssh/id_*). No password or
  // keyboard-interactive method: they would need a prompt.
  int rc = ssh_userauth_publickey_auto(session_, nullptr, nullptr);
  if (rc == SSH_AUTH_SUCCESS) return;
  if (rc == SSH_AUTH_ERROR) {
    throw Error(ErrorKind::Disconnected,
                name_ + ": connection lost while logging in to " + target_ + ": " + error_text());
  }
  int methods = ssh_userauth_list(session_, nullptr);
  std::string allowed;
  for (auto [bit, text] : {std::pair{SSH_AUTH_METHOD_PUBLICKEY, "publickey"},
                           {SSH_AUTH_METHOD_PASSWORD, "password"},
                           {SSH_AUTH_METHOD_INTERACTIVE, "keyboard-interactive"},
                           {SSH_AUTH_METHOD_GSSAPI_MIC, "gssapi"}}) {
    if (methods & bit) allowed += (allowed.empty() ? "" : ",") + std::string(text);
  }
  throw Error(ErrorKind::InvalidArgument,
              name_ + ": login to " + target_ + " refused: no key was accepted (tried " +
                  "ssh-agent and identity files" +
                  (plan.options.identity_file.empty() ? "" : " incl. " +
                                                                 plan.options.identity_file) +
                  "; the server allows: " + (allowed.empty() ? "none" : allowed) + ")");
}

}  // namespace dj::detail
