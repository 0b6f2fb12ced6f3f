// Kernels for the workshop notebook's cells (examples/notebook): 3+3, rand(3,3), "which
// worker did the work?", and the method1/method2 data-movement lesson.
#include <dj/kernel.hpp>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

namespace {

std::mt19937_64& rng() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return engine;
}

dj::Matrix<double> matmul(const dj::Matrix<double>& a, const dj::Matrix<double>& b) {
  if (a.cols() != b.rows()) {
    throw std::invalid_argument("matmul: " + std::to_string(a.rows()) + "x" +
                                std::to_string(a.cols()) + " times " + std::to_string(b.rows()) +
                                "x" + std::to_string(b.cols()));
  }
  dj::Matrix<double> c(a.rows(), b.cols());
  for (size_t j = 0; j < b.cols(); ++j) {
    for (size_t k = 0; k < a.cols(); ++k) {
      double bkj = b(k, j);
      for (size_t i = 0; i < a.rows(); ++i) c(i, j) += a(i, k) * bkj;
    }
  }
  return c;
}

}  // namespace

double add(double a, double b) { return a + b; }

// rand(rows, cols): uniform [0, 1) entries.
dj::Matrix<double> rand_matrix(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("rand_matrix: negative dimension");
  std::uniform_real_distribution<double> u(0.0, 1.0);
  dj::Matrix<double> m(static_cast<size_t>(rows), static_cast<size_t>(cols));
  for (size_t i = 0; i < m.size(); ++i) m.data()[i] = u(rng());
  return m;
}

// @fetch begin println(myid()); 3+3 end
double print_myid_then_add(double a, double b) {
  std::printf("%d\n", dj::myid());
  return a + b;
}

int32_t whoami() { return dj::myid(); }

// method1: A and B travel to the worker, the product travels back.
dj::Matrix<double> square_product(const dj::Matrix<double>& a, const dj::Matrix<double>& b) {
  return matmul(matmul(a, a), matmul(b, b));
}

// method2: the worker makes its own A and B; only the product travels.
dj::Matrix<double> random_square_product(int64_t n) {
  return square_product(rand_matrix(n, n), rand_matrix(n, n));
}

// The body of square_distributed!: this worker squares its share of the SharedArray in place,
// with 1 ms of (sleeping) work per element, as the notebook's sleep(0.001).
void square_local_part(dj::SharedArray<double> a) {
  for (size_t i : dj::localindices(a)) {
    a[i] = a[i] * a[i];
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

DJ_PLUGIN("notebook_kernels", DJ_KERNEL(add), DJ_KERNEL(rand_matrix),
          DJ_KERNEL(print_myid_then_add), DJ_KERNEL(whoami), DJ_KERNEL(square_product),
          DJ_KERNEL(random_square_product), DJ_KERNEL(square_local_part))
