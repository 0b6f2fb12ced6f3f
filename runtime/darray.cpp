// DArray's chunk grid and its checks (dj/darray.hpp).
#include "dj/darray.hpp"

#include <sys/random.h>

#include <numeric>
#include <set>

#include "cluster.hpp"

namespace dj::detail {
namespace {

[[noreturn]] void bad(const std::string& why) {
  throw Error(ErrorKind::InvalidArgument, "DArray: " + why);
}

std::string list(const std::vector<size_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::vector<size_t> prime_factors_descending(size_t n) {
  std::vector<size_t> f;
  for (size_t p = 2; p * p <= n; ++p) {
    while (n % p == 0) {
      f.push_back(p);
      n /= p;
    }
  }
  if (n > 1) f.push_back(n);
  std::sort(f.rbegin(), f.rend());
  return f;
}

// Julia's defaultdist: the process count factored over the dimensions, each prime factor going
// to the dimension with the longest pieces; a dimension is never cut into empty pieces (so
// fewer processes may be used than given).
std::vector<size_t> default_dist(const std::vector<size_t>& dims, size_t nprocs) {
  std::vector<size_t> dist(dims.size(), 1);
  for (size_t p : prime_factors_descending(nprocs)) {
    size_t best = dims.size();
    for (size_t d = 0; d < dims.size(); ++d) {
      if (dims[d] < dist[d] * p) continue;
      if (best == dims.size() || dims[d] / dist[d] > dims[best] / dist[best]) best = d;
    }
    if (best != dims.size()) dist[best] *= p;
  }
  return dist;
}

// Boundaries of n elements cut into `parts` pieces whose lengths differ by at most one
// (longer pieces first).
std::vector<size_t> even_cuts(size_t n, size_t parts) {
  std::vector<size_t> cuts{0};
  for (size_t i = 0; i < parts; ++i) cuts.push_back(cuts.back() + n / parts + (i < n % parts));
  return cuts;
}

// Grid coordinates of chunk k (column-major over dist).
std::vector<size_t> grid_of(const DArrayLayout& l, size_t k) {
  std::vector<size_t> g(l.dist.size());
  for (size_t d = 0; d < l.dist.size(); ++d) {
    g[d] = k % l.dist[d];
    k /= l.dist[d];
  }
  return g;
}

}  // namespace

size_t DArrayLayout::length() const {
  return std::accumulate(dims.begin(), dims.end(), size_t{1}, std::multiplies<>());
}

std::vector<IndexRange> DArrayLayout::chunk_ranges(size_t k) const {
  auto g = grid_of(*this, k);
  std::vector<IndexRange> r;
  for (size_t d = 0; d < dims.size(); ++d) r.push_back({cuts[d][g[d]], cuts[d][g[d] + 1]});
  return r;
}

size_t DArrayLayout::chunk_length(size_t k) const {
  size_t n = 1;
  for (const auto& r : chunk_ranges(k)) n *= r.size();
  return n;
}

std::pair<size_t, size_t> DArrayLayout::locate(const std::vector<size_t>& index) const {
  if (index.size() != dims.size()) {
    bad("an index of " + std::to_string(index.size()) + " dimensions for an array of " +
        std::to_string(dims.size()));
  }
  size_t k = 0, stride = 1, offset = 0, local_stride = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (index[d] >= dims[d]) bad("index " + list(index) + " is outside dims " + list(dims));
    size_t piece = static_cast<size_t>(
        std::upper_bound(cuts[d].begin(), cuts[d].end(), index[d]) - cuts[d].begin() - 1);
    k += piece * stride;
    stride *= dist[d];
    offset += (index[d] - cuts[d][piece]) * local_stride;
    local_stride *= cuts[d][piece + 1] - cuts[d][piece];
  }
  return {k, offset};
}

std::vector<size_t> DArrayLayout::chunk_offsets(size_t k) const {
  auto ranges = chunk_ranges(k);
  std::vector<size_t> out;
  out.reserve(chunk_length(k));
  if (out.capacity() == 0) return out;
  std::vector<size_t> at(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) at[d] = ranges[d].first;
  for (;;) {
    size_t offset = 0, stride = 1;
    for (size_t d = 0; d < dims.size(); ++d) {
      offset += at[d] * stride;
      stride *= dims[d];
    }
    out.push_back(offset);
    size_t d = 0;
    for (; d < dims.size(); ++d) {
      if (++at[d] < ranges[d].last) break;
      at[d] = ranges[d].first;
    }
    if (d == dims.size()) return out;
  }
}

std::string DArrayLayout::describe(size_t k) const {
  std::string s = "chunk " + std::to_string(k) + " (indices ";
  auto ranges = chunk_ranges(k);
  for (size_t d = 0; d < ranges.size(); ++d) {
    s += (d ? " x " : "") + std::string("[") + std::to_string(ranges[d].first) + ", " +
         std::to_string(ranges[d].last) + ")";
  }
  return s + ") on worker " + std::to_string(pids[k]);
}

DArrayLayout make_layout(std::vector<size_t> dims, std::vector<int> pids,
                         std::vector<size_t> dist) {
  if (dims.empty()) bad("dims must have at least one dimension");
  if (pids.empty()) pids = workers();
  std::set<int> known;
  for (int p : procs()) known.insert(p);
  std::set<int> seen;
  for (int p : pids) {
    if (!known.count(p)) bad("pid " + std::to_string(p) + " is not a live process");
    if (!seen.insert(p).second) bad("pid " + std::to_string(p) + " is listed twice");
  }
  if (dist.empty()) {
    dist = default_dist(dims, pids.size());
  } else {
    if (dist.size() != dims.size()) {
      bad("dist " + list(dist) + " has " + std::to_string(dist.size()) + " entries for " +
          std::to_string(dims.size()) + " dimensions");
    }
    size_t chunks = 1;
    for (size_t d = 0; d < dims.size(); ++d) {
      if (dist[d] == 0) bad("dist " + list(dist) + " cuts a dimension into 0 pieces");
      if (dist[d] > std::max<size_t>(dims[d], 1)) {
        bad("dist " + list(dist) + " cuts dimension " + std::to_string(d) + " of length " +
            std::to_string(dims[d]) + " into " + std::to_string(dist[d]) + " pieces");
      }
      chunks *= dist[d];
    }
    if (chunks > pids.size()) {
      bad("dist " + list(dist) + " makes " + std::to_string(chunks) + " chunks for " +
          std::to_string(pids.size()) + " processes");
    }
  }
  DArrayLayout l;
  l.dims = std::move(dims);
  l.dist = std::move(dist);
  size_t chunks = 1;
  for (size_t d = 0; d < l.dims.size(); ++d) {
    l.cuts.push_back(even_cuts(l.dims[d], l.dist[d]));
    chunks *= l.dist[d];
  }
  pids.resize(chunks);
  l.pids = std::move(pids);
  return l;
}

void throw_chunk_error(const DArrayLayout& layout, size_t k, const Error& e) {
  throw Error(e.kind(), "DArray " + layout.describe(k) + ": " + e.what(), e.worker());
}

std::shared_ptr<RefState> store_on(int pid, std::string bytes) {
  return Cluster::instance().store_value(pid, std::move(bytes));
}

const std::string& no_kernel_name() {
  static const std::string name = "(built-in)";
  return name;
}

uint64_t random_seed() {
  uint64_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = 0x853c49e6748fea9bULL;
  return seed;
}

}  // namespace dj::detail
