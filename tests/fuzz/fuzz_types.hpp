// The representative value types the argument fuzzer decodes, shared with the seed generator
// so that the seeds are real encodings of them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dj/matrix.hpp"
#include "dj/serialize.hpp"

namespace dj::fuzz {

struct Particle {
  double x = 0, y = 0;
  int32_t id = 0;
  std::string tag;
  std::vector<std::pair<bool, int16_t>> history;
};
DJ_STRUCT(Particle, x, y, id, tag, history)

using Str = std::string;
using Doubles = std::vector<double>;
using Nested = std::vector<std::vector<int32_t>>;
using Tuple = std::tuple<int64_t, std::string, std::vector<float>, std::array<uint8_t, 3>>;
using Mat = dj::Matrix<double>;
using Particles = std::vector<Particle>;

}  // namespace dj::fuzz
