// Kernels for the DArray tests: element functions, reducers, chunk initialisers.
#include <dj/kernel.hpp>

#include <stdexcept>
#include <string>

double twice(double x) { return 2 * x; }
double plus(double a, double b) { return a + b; }
int64_t fail_on_seven(double x) {
  if (x == 7) throw std::runtime_error("seven is not allowed");
  return static_cast<int64_t>(x);
}
double trace(const dj::Matrix<double>& m) {
  double t = 0;
  for (size_t i = 0; i < m.rows() && i < m.cols(); ++i) t += m(i, i);
  return t;
}
std::string label(const std::string& s) { return "<" + s + ">"; }

// Element (i, j) of a 2-d array = i + 1000 j, for the chunk's own index ranges.
std::vector<double> index_values(std::vector<dj::IndexRange> ranges) {
  std::vector<double> out;
  dj::IndexRange cols = ranges.size() > 1 ? ranges[1] : dj::IndexRange{0, 1};
  for (size_t j : cols) {
    for (size_t i : ranges[0]) out.push_back(static_cast<double>(i + 1000 * j));
  }
  return out;
}
std::vector<double> one_short(std::vector<dj::IndexRange> ranges) {
  std::vector<double> out(ranges[0].size());
  if (!out.empty()) out.pop_back();
  return out;
}
// The length of the chunk a worker holds, read in place (its localpart).
int64_t local_length(const std::vector<double>& part) { return static_cast<int64_t>(part.size()); }
int32_t where() { return dj::myid(); }

DJ_PLUGIN("darray_kernels", DJ_KERNEL(twice), DJ_KERNEL(plus), DJ_KERNEL(fail_on_seven),
          DJ_KERNEL(trace), DJ_KERNEL(label), DJ_KERNEL(index_values), DJ_KERNEL(one_short),
          DJ_KERNEL(local_length), DJ_KERNEL(where))
