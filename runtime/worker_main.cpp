// dj-worker: the process a cluster manager starts. It reads the cluster cookie from stdin
// (never argv or the environment, so `ps` cannot show it), listens, prints where on stdout,
// and serves the first peer that presents the cookie.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "dj/dj.hpp"
#include "identity.hpp"
#include "net.hpp"
#include "plugins/sha256.hpp"
#include "sys.hpp"
#include "worker_server.hpp"

namespace {

constexpr const char* kUsage =
    "usage: dj-worker [--bind ADDRESS | --bind-toward MASTER_ADDRESS] [--port PORT]\n"
    "                 [--accept-timeout MS]\n"
    "Started by a dj cluster manager; reads the cluster cookie from stdin.\n"
    "  --bind ADDRESS              listen on ADDRESS (default 127.0.0.1)\n"
    "  --bind-toward MASTER_ADDR   listen on this host's address that routes to MASTER_ADDR\n"
    "  --port PORT                 listen on PORT (default: any free port)\n";

std::string read_cookie_line() {
  std::string line;
  char c;
  while (line.size() < 1024) {
    ssize_t r = ::read(STDIN_FILENO, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || c == '\n') break;
    line += c;
  }
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  std::string bind = "127.0.0.1", bind_toward;
  long accept_timeout_ms = 60000, port = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--bind" || arg == "--bind-toward" || arg == "--port" ||
         arg == "--accept-timeout") && i + 1 < argc) {
      std::string value = argv[++i];
      if (arg == "--bind") bind = value;
      else if (arg == "--bind-toward") bind_toward = value;
      else if (arg == "--port") port = std::atol(value.c_str());
      else accept_timeout_ms = std::atol(value.c_str());
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "dj-worker: unknown argument '%s'\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  // Kernel output reaches the master line by line, as it is printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  std::string cookie_hex = read_cookie_line();
  if (cookie_hex.size() < 32) {
    std::fprintf(stderr, "dj-worker: no cluster cookie on stdin (started by hand?)\n");
    return 2;
  }
  try {
    if (!bind_toward.empty()) bind = dj::detail::address_toward(bind_toward);
    dj::detail::Fd listener = dj::detail::listen_tcp(bind, static_cast<uint16_t>(port));
    // A same-host master connects through the abstract Unix socket instead (cheaper); the
    // host identity on the line tells it whether it is on the same host.
    std::string unix_name = "dj-worker-" + std::to_string(::getpid()) + "-" +
                            dj::detail::to_hex(dj::detail::random_bytes(8));
    dj::detail::Fd local = dj::detail::listen_unix_abstract(unix_name);
    std::printf("dj-worker listening on %s unix:@%s host:%s\n",
                dj::detail::local_address(listener.get()).c_str(), unix_name.c_str(),
                dj::detail::host_identity().c_str());
    std::fflush(stdout);
    dj::detail::WorkerServer server(cookie_hex, std::move(listener), std::move(local));
    return server.run(std::chrono::milliseconds(accept_timeout_ms));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dj-worker: %s\n", e.what());
    return 1;
  }
}
