// Typed values <-> bytes, type names in signatures, and hostile bytes.
#include <catch2/catch.hpp>

#include "dj/serialize.hpp"

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
