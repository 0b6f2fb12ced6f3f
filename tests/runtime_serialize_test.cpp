// Typed values <-> bytes, type names in signatures, and hostile bytes.
#include <catch2/catch.hpp>

#include "dj/array_view.hpp"
#include "dj/serialize.hpp"

#include <algorithm>
#include <cstring>

using namespace dj;

namespace shapes {
struct Box {
  double w, h;
  std::vector<int32_t> tags;
};
DJ_STRUCT(Box, w, h, tags)
}  // namespace shapes

template <class T>
T round_trip(const T& v) {
  return ser::from_bytes<T>(ser::to_bytes(v));
}

TEST_CASE("every supported type round-trips unchanged", "[serialize]") {
  CHECK(round_trip(3.5) == 3.5);
  CHECK(round_trip(int8_t{-7}) == -7);
  CHECK(round_trip(uint64_t{1} << 63) == uint64_t{1} << 63);
  CHECK(round_trip(true));
  CHECK(round_trip(std::string("h\0llo", 5)) == std::string("h\0llo", 5));
  CHECK(round_trip(std::vector<double>{1, 2, 3}) == std::vector<double>{1, 2, 3});
  CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
  std::vector<std::vector<std::string>> nested{{"a"}, {}, {"b", "c"}};
  CHECK(round_trip(nested) == nested);
  CHECK(round_trip(std::array<int16_t, 3>{1, -2, 3}) == std::array<int16_t, 3>{1, -2, 3});
  auto t = std::make_tuple(int32_t{1}, std::string("x"), std::vector<float>{2.5f});
  CHECK(round_trip(t) == t);
  auto p = std::make_pair(std::string("k"), 9.0);
  CHECK(round_trip(p) == p);
  Matrix<double> m(2, 3, std::vector<double>{1, 2, 3, 4, 5, 6});
  Matrix<double> back = round_trip(m);
  CHECK(back == m);
  CHECK(back(1, 2) == 6);  // column-major: (i, j) at i + j * rows
  shapes::Box box{1.5, 2.5, {7, 8}};
  auto b = round_trip(box);
  CHECK(b.w == 1.5);
  CHECK(b.h == 2.5);
  CHECK(b.tags == std::vector<int32_t>{7, 8});
}

TEST_CASE("type names make signatures that differ whenever the types differ", "[serialize]") {
  CHECK(ser::type_name<double>() == "f64");
  CHECK(ser::type_name<int32_t>() == "i32");
  CHECK(ser::type_name<std::vector<std::vector<int64_t>>>() == "vec<vec<i64>>");
  CHECK(ser::type_name<std::array<float, 3>>() == "arr<f32,3>");
  CHECK(ser::type_name<std::pair<int8_t, std::string>>() == "tup<i8,str>");
  CHECK(ser::type_name<Matrix<double>>() == "mat<f64>");
  CHECK(ser::type_name<shapes::Box>() == "Box{f64,f64,vec<i32>}");
  CHECK(ser::call_signature<double, double, double>() == "(f64,f64)->f64");
  CHECK(ser::call_signature<void>() == "()->void");
  CHECK(ser::call_signature<double, int32_t>() != ser::call_signature<double, int64_t>());
}

TEST_CASE("bytes of the wrong type or length are refused, never read out of bounds", "[serialize][errors]") {
  std::string d = ser::to_bytes(3.0);
  REQUIRE_THROWS_WITH(ser::from_bytes<int32_t>(d), Catch::Contains("left over"));
  REQUIRE_THROWS_WITH(ser::from_bytes<std::vector<double>>(std::string(4, '\0')),
                      Catch::Contains("end early"));
  // A vector claiming 2^60 elements in 16 bytes: refused before allocating anything.
  std::string huge(16, '\0');
  uint64_t n = uint64_t{1} << 60;
  std::memcpy(huge.data(), &n, 8);
  REQUIRE_THROWS_WITH(ser::from_bytes<std::vector<double>>(huge), Catch::Contains("exceeds"));
  REQUIRE_THROWS_WITH(ser::from_bytes<std::string>(huge), Catch::Contains("exceeds"));
  std::string mat(32, '\0');
  uint64_t big = uint64_t{1} << 40;
  std::memcpy(mat.data(), &big, 8);
  std::memcpy(mat.data() + 8, &big, 8);
  REQUIRE_THROWS_WITH(ser::from_bytes<Matrix<double>>(mat), Catch::Contains("larger than"));
}

TEST_CASE("an ArrayView has std::vector's wire form and keeps or copies its bytes as told",
          "[serialize][view]") {
  std::vector<double> v{1.5, -2.0, 3.25};
  CHECK(ser::type_name<ArrayView<double>>() == ser::type_name<std::vector<double>>());
  CHECK(ser::to_bytes(ArrayView<double>(v)) == ser::to_bytes(v));
  std::string bytes = ser::to_bytes(v);
  // Owned bytes: copied, so the view outlives them.
  ArrayView<double> copied = ser::from_bytes<ArrayView<double>>(bytes);
  bytes.assign(bytes.size(), '\0');
  CHECK(copied.to_vector() == v);
  // Lent bytes (8-aligned, as shared memory is): read in place, kept alive by the lease.
  auto shared = std::make_shared<std::vector<uint64_t>>(4);
  std::memcpy(shared->data(), ser::to_bytes(v).data(), 32);
  const auto* at = reinterpret_cast<const unsigned char*>(shared->data());
  ArrayView<double> kept = ser::from_bytes<ArrayView<double>>(ser::Bytes(at, 32, shared));
  CHECK(kept.data() == reinterpret_cast<const double*>(at + 8));
  shared.reset();  // the view's lease keeps the memory
  CHECK(kept.to_vector() == v);
  // Misaligned bytes are copied rather than read misaligned.
  std::vector<unsigned char> odd(33);
  std::memcpy(odd.data() + 1, ser::to_bytes(v).data(), 32);
  ser::Reader r(odd.data() + 1, 32);
  r.borrow();
  ArrayView<double> realigned = ser::read_whole<ArrayView<double>>(r);
  CHECK(reinterpret_cast<uintptr_t>(realigned.data()) % alignof(double) == 0);
  CHECK(realigned.to_vector() == v);
  // A count beyond the bytes is refused.
  std::string bad = ser::to_bytes(v);
  bad.resize(20);
  CHECK_THROWS_WITH(ser::from_bytes<ArrayView<double>>(bad), Catch::Contains("exceeds"));
}

TEST_CASE("large arrays are copied intact whatever the alignment of either end",
          "[serialize]") {
  // Large enough for copy_bytes' streaming path, with ends that are not multiples of 64.
  const size_t n = ser::kStreamCopyBytes + 77;
  std::vector<unsigned char> src(n + 16), dst(n + 16);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 131 + i / 4099);
  for (size_t s : {size_t{0}, size_t{3}, size_t{8}}) {
    for (size_t d : {size_t{0}, size_t{5}, size_t{15}}) {
      std::fill(dst.begin(), dst.end(), 0xee);
      ser::copy_bytes(dst.data() + d, src.data() + s, n - 1);
      CHECK(std::memcmp(dst.data() + d, src.data() + s, n - 1) == 0);
      // Nothing written outside the destination.
      CHECK(std::all_of(dst.begin(), dst.begin() + static_cast<long>(d),
                        [](unsigned char c) { return c == 0xee; }));
      CHECK(std::all_of(dst.begin() + static_cast<long>(d + n - 1), dst.end(),
                        [](unsigned char c) { return c == 0xee; }));
    }
  }
  // A large std::vector (decoded into memory asked for as huge pages) and a large ArrayView.
  std::vector<double> big(ser::kStreamCopyBytes / sizeof(double) + 3);
  for (size_t i = 0; i < big.size(); ++i) big[i] = 0.5 * static_cast<double>(i);
  CHECK(round_trip(big) == big);
  std::string bytes = ser::to_bytes(ArrayView<double>(big));
  CHECK(ser::from_bytes<std::vector<double>>(bytes) == big);
}
