// Faults: workers that die, peers without the cookie, the master ending in every way, and
// worker output reaching the master.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "dj/dj.hpp"
#include "net.hpp"
#include "test_support.hpp"
#include "wire/frame.hpp"

using namespace dj;
using Catch::Contains;

namespace {

struct Kernels {
  Plugin plugin = everywhere(test::plugin("test_kernels"));
  Kernel<double(double, double)> add = plugin.kernel<double(double, double)>("add");
  Kernel<int32_t(int32_t)> sleep_ms = plugin.kernel<int32_t(int32_t)>("sleep_ms");
  Kernel<int32_t(int32_t)> crash = plugin.kernel<int32_t(int32_t)>("crash");
};

Error error_of(const Future<int32_t>& f) {
  try {
    fetch(f);
  } catch (const Error& e) {
    return e;
  }
  FAIL("fetch did not throw");
  return Error(ErrorKind::Internal, "unreachable");
}

// Captures what this process writes to fd 1 while alive.
class StdoutCapture {
 public:
  StdoutCapture() : file_(dir_.path() + "/stdout") {
    std::fflush(stdout);
    saved_ = ::dup(1);
    int fd = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::close(fd);
  }
  ~StdoutCapture() {
    std::fflush(stdout);
    ::dup2(saved_, 1);
    ::close(saved_);
  }
  std::string text() const {
    std::fflush(stdout);
    std::ifstream in(file_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  test::TempDir dir_;
  std::string file_;
  int saved_ = -1;
};

// A read that ends the connection: EOF, or a reset when the peer closed with bytes unread.
bool closed_by_peer(int fd) {
  char c;
  ssize_t r = ::read(fd, &c, 1);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

}  // namespace

TEST_CASE("a worker killed with SIGKILL fails its pending Futures with ProcessExited", "[faults]") {
  addprocs(2);
  Kernels k;
  Future<int32_t> pending = spawnat(2, k.sleep_ms, 10000);
  Future<int32_t> queued = spawnat(2, k.sleep_ms, 1);
  ::kill(static_cast<pid_t>(worker_info(2).os_pid), SIGKILL);
  Error e = error_of(pending);
  CHECK(e.kind() == ErrorKind::Disconnected);
  CHECK(e.worker() == 2);
  CHECK_THAT(e.what(), Contains("ProcessExited(2)") && Contains("killed by signal 9"));
  CHECK(error_of(queued).kind() == ErrorKind::Disconnected);
  CHECK(workers() == std::vector<int>{3});
  CHECK(remotecall_fetch(k.add, 3, 1.0, 2.0) == 3.0);  // the others go on
}

TEST_CASE("a kernel that crashes or exits its worker is reported with the cause", "[faults]") {
  addprocs(2);
  Kernels k;
  Error aborted = error_of(spawnat(2, k.crash, 0));
  CHECK_THAT(aborted.what(), Contains("ProcessExited(2)") && Contains("signal 6"));
  Error exited = error_of(spawnat(3, k.crash, 3));
  CHECK_THAT(exited.what(), Contains("ProcessExited(3)") && Contains("exited with status 3"));
  CHECK(workers() == std::vector<int>{1});
  CHECK(test::children_named("dj-worker").empty());
}

TEST_CASE("a value held by a worker that died cannot be fetched and says why", "[faults]") {
  addprocs(1);
  Kernels k;
  // Larger than the copy that rides with completion, so only the worker holds it.
  auto big_vector = k.plugin.kernel<std::vector<double>(int64_t, double)>("big_vector");
  Future<std::vector<double>> done = spawnat(2, big_vector, int64_t{10000}, 1.0);
  wait(done);
  ::kill(static_cast<pid_t>(worker_info(2).os_pid), SIGKILL);
  REQUIRE(test::eventually([] { return workers() == std::vector<int>{1}; }));
  try {
    fetch(done);
    FAIL("fetch of a lost value succeeded");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Contains("was lost") && Contains("worker 2"));
  }
}

TEST_CASE("a small result fetched after its worker died is still there", "[faults]") {
  addprocs(1);
  Kernels k;
  Future<int32_t> small = spawnat(2, k.sleep_ms, 1);
  wait(small);
  ::kill(static_cast<pid_t>(worker_info(2).os_pid), SIGKILL);
  REQUIRE(test::eventually([] { return workers() == std::vector<int>{1}; }));
  CHECK(fetch(small) == 1);  // it came with the completion message
}

TEST_CASE("peers without the cluster cookie are dropped and the worker stays healthy", "[faults][security]") {
  addprocs(1);
  Kernels k;
  auto [host, port] = detail::split_host_port(worker_info(2).address);

  {  // random bytes
    detail::Fd s = detail::connect_tcp(host, port, std::chrono::milliseconds(1000));
    std::string junk = "GET / HTTP/1.0\r\n\r\n and some more bytes to fill the prefix";
    REQUIRE(::write(s.get(), junk.data(), junk.size()) > 0);
    CHECK(closed_by_peer(s.get()));
  }
  {  // a well-formed Hello with the wrong cookie
    detail::Fd s = detail::connect_tcp(host, port, std::chrono::milliseconds(1000));
    wire::write_frame(s.get(), wire::Hello{std::string(64, 'a'), 2, 1, wire::kProtocolVersion});
    CHECK(closed_by_peer(s.get()));
  }
  {  // nothing at all: dropped at the handshake deadline
    detail::Fd s = detail::connect_tcp(host, port, std::chrono::milliseconds(1000));
    CHECK(closed_by_peer(s.get()));
  }
  CHECK(remotecall_fetch(k.add, 2, 20.0, 22.0) == 42.0);
  CHECK(workers() == std::vector<int>{2});
}

TEST_CASE("the cluster cookie never appears on a worker's command line or environment", "[faults][security]") {
  addprocs(1);
  pid_t os = static_cast<pid_t>(worker_info(2).os_pid);
  auto read_all = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::string cmdline = read_all("/proc/" + std::to_string(os) + "/cmdline");
  std::string environ = read_all("/proc/" + std::to_string(os) + "/environ");
  CHECK_THAT(cmdline, Contains("dj-worker"));
  // The cookie is 64 hex digits; no such run appears in either.
  auto has_hex_run = [](const std::string& s) {
    int run = 0;
    for (char c : s) {
      run = std::isxdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
      if (run >= 64) return true;
    }
    return false;
  };
  CHECK_FALSE(has_hex_run(cmdline));
  CHECK_FALSE(has_hex_run(environ));
}

TEST_CASE("worker output reaches the master's stdout line by line as From worker N", "[faults][output]") {
  StdoutCapture capture;
  addprocs(2);
  Kernels k;
  auto print_line = k.plugin.kernel<void(std::string)>("print_line");
  auto print_stderr = k.plugin.kernel<void(std::string)>("print_stderr");
  remotecall_fetch(print_line, 3, std::string("hello from three"));
  remotecall_fetch(print_stderr, 2, std::string("warning from two"));
  REQUIRE(test::eventually([&] {
    std::string out = capture.text();
    return out.find("From worker 3:\thello from three\n") != std::string::npos &&
           out.find("From worker 2:\twarning from two\n") != std::string::npos;
  }));
  CHECK_THAT(capture.text(), Contains("      From worker 3:\thello from three"));
}

namespace {

// Starts test_master with `args`, reads its worker pid line, returns {master pid, worker pids}.
std::pair<pid_t, std::vector<pid_t>> start_master(const std::string& args) {
  auto master = test::start_with_stdout(test::program("test_master") + " " + args);
  std::string text = test::read_until(master.stdout_fd, "\n");
  ::close(master.stdout_fd);
  pid_t child = master.pid;
  std::vector<pid_t> pids;
  std::istringstream in(text.substr(text.find(':') + 1));
  long p;
  while (in >> p) pids.push_back(static_cast<pid_t>(p));
  return {child, pids};
}

bool all_dead(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (test::process_alive(p)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("every worker is gone soon after the master ends, however it ends", "[faults][lifetime]") {
  struct Way {
    const char* mode;
    int signal;
  };
  for (Way way : {Way{"hold 2", SIGKILL}, Way{"hold 2", SIGTERM}, Way{"hold 2", SIGINT},
                  Way{"return 2", 0}, Way{"throw 2", 0}}) {
    DYNAMIC_SECTION(way.mode << " signal " << way.signal) {
      auto [master, workers] = start_master(way.mode);
      REQUIRE(workers.size() == 2);
      if (way.signal) ::kill(master, way.signal);
      int status = 0;
      ::waitpid(master, &status, 0);
      CHECK(test::eventually([&] { return all_dead(workers); }, std::chrono::milliseconds(3000)));
    }
  }
}

TEST_CASE("Ctrl-C in the master interrupts the kernels it waits on and the program goes on", "[faults][interrupt]") {
  auto master = test::start_with_stdout(test::program("test_master") + " busy " +
                                        test::plugin("test_kernels"));
  pid_t child = master.pid;
  std::string text = test::read_until(master.stdout_fd, "ready");
  REQUIRE_THAT(text, Contains("ready"));
  ::kill(child, SIGINT);
  text += test::read_until(master.stdout_fd, "");
  ::close(master.stdout_fd);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK_THAT(text, Contains("fetch threw Cancelled") && Contains("worker still there: yes"));
}
