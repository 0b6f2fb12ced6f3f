// dj::Matrix<T>: a dense, column-major (Julia's order) matrix that kernels take and return.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace dj {

// Element (i, j) lives at data()[i + j * rows()], as in Julia and LAPACK.
template <class T>
class Matrix {
 public:
  Matrix() = default;
  // A rows x cols matrix filled with `fill`.
  Matrix(size_t rows, size_t cols, T fill = T{}) : rows_(rows), cols_(cols), data_(rows * cols, fill) {}
  // Takes column-major `data`. Throws: std::invalid_argument if data.size() != rows * cols.
  Matrix(size_t rows, size_t cols, std::vector<T> data)
      : rows_(rows), cols_(cols), data_(std::move(data)) {
    if (data_.size() != rows_ * cols_) {
      throw std::invalid_argument("dj::Matrix: " + std::to_string(data_.size()) +
                                  " elements given for a " + std::to_string(rows_) + "x" +
                                  std::to_string(cols_) + " matrix");
    }
  }

  size_t rows() const noexcept { return rows_; }
  size_t cols() const noexcept { return cols_; }
  size_t size() const noexcept { return data_.size(); }
  T& operator()(size_t i, size_t j) { return data_[i + j * rows_]; }
  const T& operator()(size_t i, size_t j) const { return data_[i + j * rows_]; }
  T* data() noexcept { return data_.data(); }
  const T* data() const noexcept { return data_.data(); }
  const std::vector<T>& values() const noexcept { return data_; }

  friend bool operator==(const Matrix& a, const Matrix& b) {
    return a.rows_ == b.rows_ && a.cols_ == b.cols_ && a.data_ == b.data_;
  }

 private:
  size_t rows_ = 0;
  size_t cols_ = 0;
  std::vector<T> data_;
};

}  // namespace dj
