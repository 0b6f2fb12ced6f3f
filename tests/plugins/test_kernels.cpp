// Kernels used by the test suite: every supported type, errors, blocking, memory, output.
#include <dj/kernel.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <stdexcept>
#include <thread>

namespace geo {
struct Particle {
  double x, y;
  int32_t id;
  std::string name;
};
DJ_STRUCT(Particle, x, y, id, name)
}  // namespace geo

double add(double a, double b) { return a + b; }

// Whether `p` lies in a bulk arena (shared memory another process lent) mapped by this process.
bool in_bulk_arena(const void* p) {
  FILE* maps = std::fopen("/proc/self/maps", "r");
  if (!maps) return false;
  char line[512];
  bool found = false;
  auto at = reinterpret_cast<uintptr_t>(p);
  while (!found && std::fgets(line, sizeof line, maps)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line, "%lx-%lx", &lo, &hi) == 2 && at >= lo && at < hi) {
      found = std::strstr(line, "/memfd:dj-bulk") != nullptr;
    }
  }
  std::fclose(maps);
  return found;
}

// ArrayView arguments: their sum, whether they were read in place, and the view sent back.
double sum_view(int32_t scale, dj::ArrayView<double> v) {
  double s = 0;
  for (double x : v) s += x;
  return s * scale;
}
bool view_in_place(dj::ArrayView<double> v) { return in_bulk_arena(v.data()); }
dj::ArrayView<double> echo_view(dj::ArrayView<double> v) { return v; }
int32_t add_int(int32_t a, int32_t b) { return a + b; }
int32_t whoami() { return dj::myid(); }
int64_t os_pid() { return static_cast<int64_t>(::getpid()); }
std::string greet(const std::string& name) { return "hello " + name; }
std::vector<double> scale(const std::vector<double>& v, double k) {
  std::vector<double> out(v);
  for (auto& x : out) x *= k;
  return out;
}
// scale, except k == 0 throws and k < 0 kills the worker (a large argument lost mid-call).
std::vector<double> scale_or_fail(const std::vector<double>& v, double k) {
  if (k == 0) throw std::runtime_error("scale_or_fail: k is zero");
  if (k < 0) std::abort();
  return scale(v, k);
}
std::vector<std::vector<int32_t>> transpose(const std::vector<std::vector<int32_t>>& m) {
  std::vector<std::vector<int32_t>> t(m.empty() ? 0 : m[0].size(), std::vector<int32_t>(m.size()));
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m[i].size(); ++j) t[j][i] = m[i][j];
  return t;
}
std::array<float, 3> cross(const std::array<float, 3>& a, const std::array<float, 3>& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}
std::tuple<int64_t, std::string, bool> describe(const std::pair<int64_t, std::string>& p) {
  return {p.first * 2, p.second + "!", p.first > 0};
}
dj::Matrix<double> transpose_matrix(const dj::Matrix<double>& m) {
  dj::Matrix<double> t(m.cols(), m.rows());
  for (size_t i = 0; i < m.rows(); ++i)
    for (size_t j = 0; j < m.cols(); ++j) t(j, i) = m(i, j);
  return t;
}
geo::Particle move(const geo::Particle& p, double dx) { return {p.x + dx, p.y, p.id, p.name}; }
uint8_t negate_flag(bool b) { return b ? 0 : 1; }

// A big value: n doubles of value v.
std::vector<double> big_vector(int64_t n, double v) {
  return std::vector<double>(static_cast<size_t>(n), v);
}
double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }
int64_t length(const std::vector<double>& v) { return static_cast<int64_t>(v.size()); }

double fail(const std::string& message) { throw std::runtime_error(message); }
int32_t sleep_ms(int32_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
void print_line(const std::string& text) { std::printf("%s\n", text.c_str()); }
void print_stderr(const std::string& text) { std::fprintf(stderr, "%s\n", text.c_str()); }
int32_t crash(int32_t how) {
  if (how == 0) std::abort();
  std::_Exit(how);
}
// Appends to a per-process counter (remote_do side effects are observable later).
int64_t& counter() {
  static int64_t c = 0;
  return c;
}
void bump(int64_t by) { counter() += by; }
int64_t read_counter() { return counter(); }

// --- for pmap, distributed loops and interrupt ---
double square(double x) { return x * x; }
int64_t noop(int64_t x) { return x; }
int64_t fail_on_three(int64_t x) {
  if (x == 3) throw std::runtime_error("three is not allowed");
  return x;
}
int64_t sum_range(int64_t first, int64_t last) {
  int64_t s = 0;
  for (int64_t i = first; i <= last; ++i) s += i;
  return s;
}
void fail_range(int64_t first, int64_t last) {
  throw std::runtime_error("chunk " + std::to_string(first) + ":" + std::to_string(last));
}
// The first call for a given marker path kills its own worker; later calls return x.
int64_t die_once(std::string marker, int64_t x) {
  if (FILE* f = std::fopen(marker.c_str(), "r")) {
    std::fclose(f);
    return x;
  }
  if (FILE* f = std::fopen(marker.c_str(), "w")) std::fclose(f);
  ::kill(::getpid(), SIGKILL);
  return -1;
}
// "ok:N" returns N; "die:PATH" kills its worker the first time PATH is seen, then returns 2.
int64_t maybe_die(const std::string& spec) {
  if (spec.rfind("ok:", 0) == 0) return std::stoll(spec.substr(3));
  return die_once(spec.substr(4), 2);
}

int32_t sleep_then_whoami(int32_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return dj::myid();
}

// --- RemoteChannel from kernels ---
void produce(dj::RemoteChannel<int64_t> ch, int64_t n) {
  for (int64_t i = 1; i <= n; ++i) ch.put(i);
  ch.close();
}
int64_t consume(dj::RemoteChannel<int64_t> ch) {
  int64_t sum = 0;
  for (;;) {
    try {
      sum += ch.take();
    } catch (const dj::Error& e) {
      if (e.kind() == dj::ErrorKind::InvalidArgument) return sum;  // closed and drained
      throw;
    }
  }
}
int64_t take_one(dj::RemoteChannel<int64_t> ch) { return ch.take(); }

// Runs until interrupted (checking dj::interrupted()), at most max_ms.
int32_t work_until_interrupted(int32_t max_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
  while (std::chrono::steady_clock::now() < end) {
    dj::check_interrupt();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return max_ms;
}
// Busy for ms milliseconds and never checks for interrupts.
int32_t ignore_interrupts(int32_t ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
  }
  return ms;
}
// Where a worker runs: its host name, working directory and environment (cluster managers).
std::string hostname() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}
std::string working_dir() {
  char buf[4096] = {};
  return ::getcwd(buf, sizeof buf) ? buf : "";
}
std::string env_value(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? v : "";
}

DJ_PLUGIN("test_kernels", DJ_KERNEL(add), DJ_KERNEL(add_int), DJ_KERNEL(whoami), DJ_KERNEL(scale_or_fail),
          DJ_KERNEL(os_pid), DJ_KERNEL(greet), DJ_KERNEL(scale), DJ_KERNEL(transpose),
          DJ_KERNEL(cross), DJ_KERNEL(describe), DJ_KERNEL(transpose_matrix), DJ_KERNEL(move),
          DJ_KERNEL(negate_flag), DJ_KERNEL(big_vector), DJ_KERNEL(sum), DJ_KERNEL(length),
          DJ_KERNEL(fail), DJ_KERNEL(sleep_ms), DJ_KERNEL(print_line), DJ_KERNEL(print_stderr),
          DJ_KERNEL(crash), DJ_KERNEL(bump), DJ_KERNEL(read_counter),
          DJ_KERNEL(square), DJ_KERNEL(noop), DJ_KERNEL(fail_on_three), DJ_KERNEL(sum_range),
          DJ_KERNEL(fail_range), DJ_KERNEL(die_once), DJ_KERNEL(work_until_interrupted),
          DJ_KERNEL(ignore_interrupts), DJ_KERNEL(maybe_die),
          DJ_KERNEL(sleep_then_whoami), DJ_KERNEL(produce), DJ_KERNEL(consume),
          DJ_KERNEL(take_one),
          DJ_KERNEL(hostname), DJ_KERNEL(working_dir), DJ_KERNEL(env_value),
          DJ_KERNEL(sum_view), DJ_KERNEL(view_in_place), DJ_KERNEL(echo_view))
