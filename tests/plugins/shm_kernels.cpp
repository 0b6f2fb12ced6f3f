// Kernels for the SharedArray tests: each takes the array by value (a view of the same memory)
// and reads or writes it in place.
#include <dj/kernel.hpp>

#include <stdexcept>

// Julia's init pattern: each process writes its own share, marking the elements as its own.
void fill_local(dj::SharedArray<double> s) {
  for (size_t i : dj::localindices(s)) s[i] = dj::myid() * 1000.0 + static_cast<double>(i);
}

// {first, last, indexpids} of the calling process.
std::vector<uint64_t> local_range(dj::SharedArray<double> s) {
  auto r = dj::localindices(s);
  return {r.first, r.last, static_cast<uint64_t>(dj::indexpids(s))};
}

void square_chunk(dj::SharedArray<double> s) {
  for (size_t i : dj::localindices(s)) s[i] = s[i] * s[i];
}

double sum_all(const dj::SharedArray<double>& s) {
  double total = 0;
  for (double x : dj::sdata(s)) total += x;
  return total;
}

void set_at(dj::SharedArray<double> s, uint64_t i, double value) { s[i] = value; }

dj::SharedArray<double> echo(dj::SharedArray<double> s) { return s; }

// Element (i, j, k) = i + 10 j + 100 k, through the 3-index accessor.
void fill_3d(dj::SharedArray<int32_t> s) {
  const auto& d = s.dims();
  for (size_t k = 0; k < d[2]; ++k)
    for (size_t j = 0; j < d[1]; ++j)
      for (size_t i = 0; i < d[0]; ++i) s(i, j, k) = static_cast<int32_t>(i + 10 * j + 100 * k);
}

void failing_init(dj::SharedArray<double> s) {
  if (dj::myid() == s.procs().back()) {
    throw std::runtime_error("init refused on worker " + std::to_string(dj::myid()));
  }
}

DJ_PLUGIN("shm_kernels", DJ_KERNEL(fill_local), DJ_KERNEL(local_range), DJ_KERNEL(square_chunk),
          DJ_KERNEL(sum_all), DJ_KERNEL(set_at), DJ_KERNEL(echo), DJ_KERNEL(fill_3d),
          DJ_KERNEL(failing_init))
