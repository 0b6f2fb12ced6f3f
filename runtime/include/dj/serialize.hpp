// How typed values become bytes and back, and the type names a kernel's signature is checked
// with. Shared by the master (dj.hpp) and plugins (kernel.hpp); bytes are little-endian, as
// every host dj runs on.
//
// Supported: arithmetic types and bool, std::string, std::vector<T>, std::array<T, N>,
// std::pair, std::tuple, dj::Matrix<T>, nested combinations, and user structs that opt in:
//
//   struct Particle { double x, y; int id; };
//   DJ_STRUCT(Particle, x, y, id)   // every field, in declaration order (checked by count)
//
// Type names: i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 bool str vec<T> arr<T,N> tup<A,B> mat<T>
// and Name{A,B} for user structs. A call is "(A,B)->R".
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "dj/error.hpp"
#include "dj/matrix.hpp"

#include <sys/mman.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace dj::ser {

// Copies of this many bytes and more bypass the cache (copy_bytes).
inline constexpr size_t kStreamCopyBytes = size_t{16} << 20;

// memcpy, except that a large copy (an array going to or coming from another process) goes
// around the cache with streaming stores: it is larger than the cache's share would hold
// anyway, and glibc's memcpy is slow for it here. Measured with Debian 12's glibc on this
// project's 2-core EPYC VMs: up to ~128 MiB glibc copies through the cache at 8-9 GB/s where
// streaming stores reach 12-14; above that it streams too, but at 4.3 GB/s instead of 12 when
// the destination lies just past the source modulo 4 KiB, which is how a value in shared
// memory and a fresh std::vector usually lie.
inline void copy_bytes(void* dst, const void* src, size_t n) {
#if defined(__x86_64__)
  if (n >= kStreamCopyBytes) {
    auto* d = static_cast<unsigned char*>(dst);
    auto* s = static_cast<const unsigned char*>(src);
    const size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;  // to align d
    std::memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 64; n -= 64, d += 64, s += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
    }
    _mm_sfence();  // streaming stores are weakly ordered: done before whatever publishes them
    std::memcpy(d, s, n);
    return;
  }
#endif
  if (n) std::memcpy(dst, src, n);
}

// n value-initialised elements, for a large array about to be copied in. Its memory is asked
// for as huge pages before the first touch: faulting in a fresh 256 MiB costs ~230 ms in 4 KiB
// pages on these VMs and ~40 ms in 2 MiB ones (THP is "madvise" on Debian 12).
template <class T>
std::vector<T> large_vector(size_t n) {
  std::vector<T> v;
  v.reserve(n);
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto lo = (reinterpret_cast<uintptr_t>(v.data()) + kHuge - 1) & ~(kHuge - 1);
  const auto hi = reinterpret_cast<uintptr_t>(v.data() + n) & ~(kHuge - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // a hint only
  v.resize(n);
  return v;
}

// Appends bytes to a buffer, or only counts them (the size pass lets results be written once,
// straight into the transport's buffer).
class Writer {
 public:
  explicit Writer(unsigned char* out = nullptr) : out_(out) {}
  void bytes(const void* p, size_t n) {
    if (out_) copy_bytes(out_ + size_, p, n);
    size_ += n;
  }
  template <class T>
  void pod(const T& v) { bytes(&v, sizeof v); }
  size_t size() const { return size_; }

 private:
  unsigned char* out_;
  size_t size_ = 0;
};

// Reads bytes with bounds checks; every failure is an InvalidArgument naming what was short.
class Reader {
 public:
  Reader(const unsigned char* p, size_t n) : p_(p), end_(p + n) {}
  void bytes(void* dst, size_t n) {
    need(n);
    copy_bytes(dst, p_, n);
    p_ += n;
  }
  template <class T>
  T pod() {
    T v;
    bytes(&v, sizeof v);
    return v;
  }
  // The next n bytes in place (for a bulk copy straight into their destination).
  const unsigned char* take(size_t n) {
    need(n);
    const unsigned char* at = p_;
    p_ += n;
    return at;
  }
  // Reads an element count and checks that count * min_elem_bytes bytes remain, so that a
  // corrupt count can never make the decoder allocate more than the input justifies.
  size_t count(size_t min_elem_bytes) {
    auto n = pod<uint64_t>();
    size_t left = remaining();
    if (min_elem_bytes ? n > left / min_elem_bytes : n > left + (size_t{1} << 20)) {
      throw Error(ErrorKind::InvalidArgument,
                  "dj: encoded count " + std::to_string(n) + " exceeds the " +
                      std::to_string(left) + " bytes left in the value");
    }
    return static_cast<size_t>(n);
  }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  // How a value read in place (dj::ArrayView) keeps its bytes: by sharing `lease` (they stay
  // while it lives), or by borrowing them (they outlive the value: a kernel's arguments
  // during its call); otherwise it copies them.
  void lend(std::shared_ptr<const void> lease) { lease_ = std::move(lease); }
  void borrow() { borrowed_ = true; }
  const std::shared_ptr<const void>& lease() const { return lease_; }
  bool borrowed() const { return borrowed_; }

 private:
  void need(size_t n) {
    if (n > remaining()) {
      throw Error(ErrorKind::InvalidArgument,
                  "dj: value bytes end early (need " + std::to_string(n) + ", have " +
                      std::to_string(remaining()) + ")");
    }
  }
  const unsigned char* p_;
  const unsigned char* end_;
  std::shared_ptr<const void> lease_;
  bool borrowed_ = false;
};

template <class T, class = void>
struct Codec;  // Not specialised: the type is not serialisable (see the list at the top).

template <class T>
struct Codec<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static std::string name() {
    if constexpr (std::is_same_v<T, bool>) return "bool";
    else if constexpr (std::is_floating_point_v<T>) return "f" + std::to_string(sizeof(T) * 8);
    else if constexpr (std::is_signed_v<T>) return "i" + std::to_string(sizeof(T) * 8);
    else return "u" + std::to_string(sizeof(T) * 8);
  }
  static constexpr size_t kMinBytes = sizeof(T);
  static void write(Writer& w, const T& v) { w.pod(v); }
  static T read(Reader& r) {
    if constexpr (std::is_same_v<T, bool>) return r.pod<uint8_t>() != 0;
    else return r.pod<T>();
  }
};

template <>
struct Codec<std::string> {
  static std::string name() { return "str"; }
  static constexpr size_t kMinBytes = 8;
  static void write(Writer& w, const std::string& v) {
    w.pod<uint64_t>(v.size());
    w.bytes(v.data(), v.size());
  }
  static std::string read(Reader& r) {
    std::string s(r.count(1), '\0');
    r.bytes(s.data(), s.size());
    return s;
  }
};

template <class T>
struct Codec<std::vector<T>> {
  static std::string name() { return "vec<" + Codec<T>::name() + ">"; }
  static constexpr size_t kMinBytes = 8;
  static void write(Writer& w, const std::vector<T>& v) {
    w.pod<uint64_t>(v.size());
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      w.bytes(v.data(), v.size() * sizeof(T));
    } else {
      for (const auto& x : v) Codec<T>::write(w, x);
    }
  }
  static std::vector<T> read(Reader& r) {
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      // Constructed from the bytes (a memmove), not zero-filled first and then copied.
      size_t n = r.count(Codec<T>::kMinBytes);
      const auto* first = reinterpret_cast<const T*>(r.take(n * sizeof(T)));
      if (n * sizeof(T) < kStreamCopyBytes) return std::vector<T>(first, first + n);
      std::vector<T> v = large_vector<T>(n);
      copy_bytes(v.data(), first, n * sizeof(T));
      return v;
    } else {
      std::vector<T> v(r.count(Codec<T>::kMinBytes));
      for (size_t i = 0; i < v.size(); ++i) v[i] = Codec<T>::read(r);
      return v;
    }
  }
};

template <class T, size_t N>
struct Codec<std::array<T, N>> {
  static std::string name() { return "arr<" + Codec<T>::name() + "," + std::to_string(N) + ">"; }
  static constexpr size_t kMinBytes = N * Codec<T>::kMinBytes;
  static void write(Writer& w, const std::array<T, N>& v) {
    for (const auto& x : v) Codec<T>::write(w, x);
  }
  static std::array<T, N> read(Reader& r) {
    std::array<T, N> v{};
    for (auto& x : v) x = Codec<T>::read(r);
    return v;
  }
};

template <class T>
struct Codec<Matrix<T>> {
  static std::string name() { return "mat<" + Codec<T>::name() + ">"; }
  static constexpr size_t kMinBytes = 16;
  static void write(Writer& w, const Matrix<T>& m) {
    w.pod<uint64_t>(m.rows());
    w.pod<uint64_t>(m.cols());
    for (const auto& x : m.values()) Codec<T>::write(w, x);
  }
  static Matrix<T> read(Reader& r) {
    auto rows = r.pod<uint64_t>();
    auto cols = r.pod<uint64_t>();
    if (cols != 0 && rows > r.remaining() / Codec<T>::kMinBytes / cols) {
      throw Error(ErrorKind::InvalidArgument, "dj: encoded matrix " + std::to_string(rows) +
                                                  "x" + std::to_string(cols) +
                                                  " is larger than its bytes");
    }
    std::vector<T> data(rows * cols);
    for (auto& x : data) x = Codec<T>::read(r);
    return Matrix<T>(rows, cols, std::move(data));
  }
};

// Tuple-like things (pair, tuple, DJ_STRUCT types) share one implementation over a tuple of
// references.
template <class... T>
std::string join_names() {
  std::string s;
  ((s += (s.empty() ? "" : ","), s += Codec<T>::name()), ...);
  return s;
}

template <class... T>
struct Codec<std::tuple<T...>> {
  static std::string name() { return "tup<" + join_names<T...>() + ">"; }
  static constexpr size_t kMinBytes = (size_t{0} + ... + Codec<T>::kMinBytes);
  static void write(Writer& w, const std::tuple<T...>& v) {
    std::apply([&](const auto&... x) { (Codec<std::decay_t<decltype(x)>>::write(w, x), ...); }, v);
  }
  static std::tuple<T...> read(Reader& r) {
    // Braced initialisation evaluates left to right, matching the write order.
    return std::tuple<T...>{Codec<T>::read(r)...};
  }
};

template <class A, class B>
struct Codec<std::pair<A, B>> {
  static std::string name() { return "tup<" + join_names<A, B>() + ">"; }
  static constexpr size_t kMinBytes = Codec<A>::kMinBytes + Codec<B>::kMinBytes;
  static void write(Writer& w, const std::pair<A, B>& v) {
    Codec<A>::write(w, v.first);
    Codec<B>::write(w, v.second);
  }
  static std::pair<A, B> read(Reader& r) {
    A a = Codec<A>::read(r);
    B b = Codec<B>::read(r);
    return {std::move(a), std::move(b)};
  }
};

// User structs opted in with DJ_STRUCT: found through dj_fields(T&) by argument lookup.
template <class T>
struct Codec<T, std::void_t<decltype(dj_fields(std::declval<T&>()))>> {
  using Fields = decltype(dj_fields(std::declval<T&>()));
  template <class Tup>
  struct Names;
  template <class... F>
  struct Names<std::tuple<F&...>> {
    static std::string get() { return join_names<std::decay_t<F>...>(); }
    static constexpr size_t kMin = (size_t{0} + ... + Codec<std::decay_t<F>>::kMinBytes);
  };
  static std::string name() { return std::string(dj_type_name(static_cast<T*>(nullptr))) + "{" + Names<Fields>::get() + "}"; }
  static constexpr size_t kMinBytes = Names<Fields>::kMin;
  static void write(Writer& w, const T& v) {
    std::apply([&](auto&... f) { (Codec<std::decay_t<decltype(f)>>::write(w, f), ...); },
               dj_fields(const_cast<T&>(v)));
  }
  static T read(Reader& r) {
    T v{};
    std::apply([&](auto&... f) { ((f = Codec<std::decay_t<decltype(f)>>::read(r)), ...); },
               dj_fields(v));
    return v;
  }
};

template <>
struct Codec<void> {
  static std::string name() { return "void"; }
};

// Name of T as used in signatures, computed once per type.
template <class T>
const std::string& type_name() {
  static const std::string name = Codec<T>::name();
  return name;
}

// "(A,B)->R" for a kernel, computed once per signature.
template <class R, class... A>
const std::string& call_signature() {
  static const std::string sig = "(" + join_names<A...>() + ")->" + Codec<R>::name();
  return sig;
}

// Bytes of one value.
template <class T>
std::string to_bytes(const T& v) {
  Writer counter;
  Codec<T>::write(counter, v);
  std::string out(counter.size(), '\0');
  Writer w(reinterpret_cast<unsigned char*>(out.data()));
  Codec<T>::write(w, v);
  return out;
}

// Decodes exactly one T from bytes (read_whole: from a reader, whatever its lease). Throws:
// InvalidArgument if the bytes are short or longer than one T (a type mismatch the signature
// check missed can never read out of bounds).
template <class T>
T read_whole(Reader& r) {
  T v = Codec<T>::read(r);
  if (r.remaining() != 0) {
    throw Error(ErrorKind::InvalidArgument,
                "dj: " + std::to_string(r.remaining()) + " bytes left over after decoding a " +
                    type_name<T>());
  }
  return v;
}
template <class T>
T from_bytes(const unsigned char* p, size_t n) {
  Reader r(p, n);
  return read_whole<T>(r);
}
template <class T>
T from_bytes(const std::string& s) {
  return from_bytes<T>(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

// Encoded bytes received from another process: held in a string, or lent (a same-host
// worker's shared memory, mapped while `lease` lives: decoded in place, never copied whole).
class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(std::string&& s) : owned_(std::move(s)) {}
  explicit Bytes(const std::string& s) : owned_(s) {}
  Bytes(const unsigned char* data, size_t size, std::shared_ptr<const void> lease)
      : lent_(data), lent_size_(size), lease_(std::move(lease)) {}
  const unsigned char* data() const {
    return lease_ ? lent_ : reinterpret_cast<const unsigned char*>(owned_.data());
  }
  size_t size() const { return lease_ ? lent_size_ : owned_.size(); }
  // What keeps lent bytes mapped (null when they are owned).
  const std::shared_ptr<const void>& lease() const { return lease_; }

 private:
  std::string owned_;
  const unsigned char* lent_ = nullptr;
  size_t lent_size_ = 0;
  std::shared_ptr<const void> lease_;
};
// Lent bytes are shared with what is read in place from them (dj::ArrayView), not copied.
template <class T>
T from_bytes(const Bytes& b) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    if (b.size() == sizeof(T)) {  // a number's whole encoding (any other size: the error below)
      T v;
      std::memcpy(&v, b.data(), sizeof v);
      return v;
    }
  }
  Reader r(b.data(), b.size());
  if (b.lease()) r.lend(b.lease());
  return read_whole<T>(r);
}

}  // namespace dj::ser

namespace dj::detail {
constexpr uint64_t fnv1a64(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}
// FNV-1a 64 of a kernel name: the id calls carry instead of the name (dispatch never compares
// strings). The registry refuses two names with the same id.
constexpr uint64_t kernel_id(std::string_view name) { return fnv1a64(name); }
// FNV-1a 64 of a call signature: what a compact call carries instead of the signature.
template <class R, class... A>
uint64_t signature_id() {
  static const uint64_t id = fnv1a64(ser::call_signature<R, A...>());
  return id;
}
}  // namespace dj::detail

// Opts a struct into serialisation. List every field in declaration order; a wrong count is a
// compile error (structured binding). Use at namespace scope, in the struct's namespace.
#define DJ_STRUCT(Type, ...)                                  \
  inline auto dj_fields(Type& dj_value_) {                    \
    auto& [__VA_ARGS__] = dj_value_;                          \
    return std::tie(__VA_ARGS__);                             \
  }                                                           \
  inline const char* dj_type_name(const Type*) { return #Type; }
