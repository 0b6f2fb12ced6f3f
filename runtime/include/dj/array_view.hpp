// dj::ArrayView<T>: a read-only array of numbers read where it arrived instead of copied into a
// std::vector, for large arrays between processes on one host.
//
//   // in a plugin: the argument is read straight from the master's shared memory
//   dj::ArrayView<double> echo_view(dj::ArrayView<double> v) { return v; }
//   // on the master: the result stays in the worker's shared memory while `back` lives
//   auto echo = plugin.kernel<dj::ArrayView<double>(dj::ArrayView<double>)>("echo_view");
//   dj::ArrayView<double> back = dj::remotecall_fetch(echo, 2, my_vector);
//
// Its wire form is std::vector<T>'s ("vec<T>"): a kernel taking or returning ArrayView<T> is
// called like one taking or returning std::vector<T>, and a std::vector<T> is passed where an
// ArrayView<T> is expected (viewed while it is encoded, not copied first).
//
// Lifetime: a view returned by remotecall_fetch keeps the bytes it reads (a same-host worker's
// shared memory, which that worker reuses for its next large result only once every view of it
// is gone; other results are copied once into memory the view shares). In a kernel, a view
// argument reads the call's own bytes and is valid until the kernel returns: keep to_vector()
// to hold the values longer. Bytes not aligned for T are copied, never read misaligned.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "dj/serialize.hpp"

namespace dj {

template <class T>
class ArrayView {
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                "dj::ArrayView holds numbers (arithmetic types other than bool)");

 public:
  ArrayView() = default;
  // Views `v` without copying it: v must outlive the view (as when passed to a call).
  ArrayView(const std::vector<T>& v) : data_(v.data()), size_(v.size()) {}  // NOLINT: implicit
  // Views `size` values at `data`, kept alive by `keeper` (if any).
  ArrayView(const T* data, size_t size, std::shared_ptr<const void> keeper = {})
      : data_(data), size_(size), keeper_(std::move(keeper)) {}

  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const T& operator[](size_t i) const { return data_[i]; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

 private:
  const T* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> keeper_;
};

namespace ser {

template <class T>
struct Codec<ArrayView<T>> {
  static std::string name() { return Codec<std::vector<T>>::name(); }
  static constexpr size_t kMinBytes = 8;
  static void write(Writer& w, const ArrayView<T>& v) {
    w.pod<uint64_t>(v.size());
    w.bytes(v.data(), v.size() * sizeof(T));
  }
  static ArrayView<T> read(Reader& r) {
    size_t n = r.count(sizeof(T));
    const unsigned char* at = r.take(n * sizeof(T));
    bool aligned = reinterpret_cast<uintptr_t>(at) % alignof(T) == 0;
    if (aligned && r.lease()) return ArrayView<T>(reinterpret_cast<const T*>(at), n, r.lease());
    if (aligned && r.borrowed()) return ArrayView<T>(reinterpret_cast<const T*>(at), n);
    auto copy = std::make_shared<std::vector<T>>(n);
    copy_bytes(copy->data(), at, n * sizeof(T));
    const T* first = copy->data();
    return ArrayView<T>(first, n, std::move(copy));
  }
};

}  // namespace ser
}  // namespace dj
