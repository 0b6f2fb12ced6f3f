// Built-in chunk operations: see chunk_ops.hpp and wire::ChunkOp.
#include "chunk_ops.hpp"

#include <cstring>
#include <new>
#include <optional>
#include <string_view>

#include "type_walk.hpp"

namespace dj::detail {
namespace {

const char* op_name(wire::ChunkOp op) {
  switch (op) {
    case wire::ChunkOp::kSlice: return "slice";
    case wire::ChunkOp::kSum: return "sum";
    case wire::ChunkOp::kFill: return "fill";
    case wire::ChunkOp::kRand: return "rand";
    case wire::ChunkOp::kLength: return "length";
    default: return "chunk operation";
  }
}

[[noreturn]] void bad(const std::string& why) { throw Error(ErrorKind::InvalidArgument, why); }

uint64_t u64_arg(const dj_arg& a, const char* what) {
  uint64_t v;
  if (a.size != sizeof v) bad(std::string(what) + " must be a u64");
  std::memcpy(&v, a.data, sizeof v);
  return v;
}

uint64_t chunk_count(const dj_arg& chunk) {
  if (chunk.size < 8) bad("the chunk is not an encoded vector");
  uint64_t n;
  std::memcpy(&n, chunk.data, sizeof n);
  return n;
}

void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }

std::optional<size_t> scalar_bytes(std::string_view t) {
  if (t == "i8" || t == "u8" || t == "bool") return 1;
  if (t == "i16" || t == "u16") return 2;
  if (t == "i32" || t == "u32" || t == "f32") return 4;
  if (t == "i64" || t == "u64" || t == "f64") return 8;
  return std::nullopt;
}

template <class T, class Acc>
std::string sum_as(const unsigned char* p, size_t n) {
  Acc acc{};
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof v);
    acc += static_cast<Acc>(v);
  }
  T out = static_cast<T>(acc);
  return std::string(reinterpret_cast<const char*>(&out), sizeof out);
}

std::string sum_chunk(std::string_view t, const dj_arg& chunk) {
  uint64_t n = chunk_count(chunk);
  auto size = scalar_bytes(t);
  if (!size || t == "bool") bad("sum needs an arithmetic element type, not " + std::string(t));
  if (n > (chunk.size - 8) / *size || chunk.size - 8 != n * *size) {
    bad("the chunk's " + std::to_string(chunk.size) + " bytes do not hold " + std::to_string(n) +
        " " + std::string(t));
  }
  const unsigned char* p = chunk.data + 8;
  if (t == "f64") {
    double s = sum_f64(p, n);
    return std::string(reinterpret_cast<const char*>(&s), sizeof s);
  }
  if (t == "f32") return sum_as<float, double>(p, n);
  if (t == "i64") return sum_as<int64_t, int64_t>(p, n);
  if (t == "i32") return sum_as<int32_t, int64_t>(p, n);
  if (t == "i16") return sum_as<int16_t, int64_t>(p, n);
  if (t == "i8") return sum_as<int8_t, int64_t>(p, n);
  if (t == "u64") return sum_as<uint64_t, uint64_t>(p, n);
  if (t == "u32") return sum_as<uint32_t, uint64_t>(p, n);
  if (t == "u16") return sum_as<uint16_t, uint64_t>(p, n);
  return sum_as<uint8_t, uint64_t>(p, n);
}

std::string slice_chunk(std::string_view t, const dj_arg& chunk, uint64_t first, uint64_t count) {
  uint64_t n = chunk_count(chunk);
  if (first > n || count > n - first) {
    bad("elements [" + std::to_string(first) + ", " + std::to_string(first + count) +
        ") are outside the chunk's " + std::to_string(n));
  }
  std::string out;
  put_u64(out, count);
  if (auto size = scalar_bytes(t); size && chunk.size - 8 == n * *size) {
    out.append(reinterpret_cast<const char*>(chunk.data + 8 + first * *size), count * *size);
    return out;
  }
  auto elements = split_elements(t, chunk.data, chunk.size);
  for (uint64_t i = first; i < first + count; ++i) {
    out.append(reinterpret_cast<const char*>(elements[i].first), elements[i].second);
  }
  return out;
}

std::string fill_chunk(uint64_t count, const dj_arg& value) {
  if (value.size != 0 && count > (uint64_t{1} << 40) / value.size) {
    bad("a chunk of " + std::to_string(count) + " elements is too large");
  }
  std::string out;
  out.reserve(8 + count * value.size);
  put_u64(out, count);
  for (uint64_t i = 0; i < count; ++i) {
    out.append(reinterpret_cast<const char*>(value.data), value.size);
  }
  return out;
}

std::string rand_chunk(uint64_t count, uint64_t seed) {
  if (count > (uint64_t{1} << 37)) bad("a chunk of " + std::to_string(count) + " is too large");
  std::string out(8 + count * 8, '\0');
  std::memcpy(out.data(), &count, 8);
  uint64_t state = seed;
  for (uint64_t i = 0; i < count; ++i) {
    // splitmix64: a fast generator with good statistical quality for filling arrays.
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    double d = static_cast<double>(z >> 11) * 0x1.0p-53;
    std::memcpy(out.data() + 8 + i * 8, &d, 8);
  }
  return out;
}

}  // namespace

double sum_f64(const unsigned char* data, size_t n) {
  double lane[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    double v[4];
    std::memcpy(v, data + i * 8, sizeof v);
    lane[0] += v[0];
    lane[1] += v[1];
    lane[2] += v[2];
    lane[3] += v[3];
  }
  for (; i < n; ++i) {
    double v;
    std::memcpy(&v, data + i * 8, 8);
    lane[0] += v;
  }
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

bool is_builtin_chunk_op(wire::ChunkOp op) {
  return op == wire::ChunkOp::kSlice || op == wire::ChunkOp::kSum || op == wire::ChunkOp::kFill ||
         op == wire::ChunkOp::kRand || op == wire::ChunkOp::kLength;
}

CallOutcome run_chunk_builtin(int pid, const wire::Call& call, const std::vector<dj_arg>& args) {
  CallOutcome out;
  try {
    const std::string& sig = call.signature;
    if (sig.size() < 3 || sig.front() != '(' || sig.back() != ')') {
      bad("malformed element type '" + sig + "'");
    }
    std::string_view type(sig.data() + 1, sig.size() - 2);
    auto want = [&](size_t n) {
      if (args.size() != n) {
        bad("expects " + std::to_string(n) + " arguments, got " + std::to_string(args.size()));
      }
    };
    switch (call.chunk_op) {
      case wire::ChunkOp::kSlice:
        want(3);
        out.result = slice_chunk(type, args[0], u64_arg(args[1], "first"),
                                 u64_arg(args[2], "count"));
        break;
      case wire::ChunkOp::kSum:
        want(1);
        out.result = sum_chunk(type, args[0]);
        break;
      case wire::ChunkOp::kFill:
        want(2);
        out.result = fill_chunk(u64_arg(args[0], "count"), args[1]);
        break;
      case wire::ChunkOp::kRand:
        want(2);
        if (type != "f64") bad("rand fills f64 chunks only, not " + std::string(type));
        out.result = rand_chunk(u64_arg(args[0], "count"), u64_arg(args[1], "seed"));
        break;
      case wire::ChunkOp::kLength: {
        want(1);
        uint64_t n = chunk_count(args[0]);
        out.result.assign(reinterpret_cast<const char*>(&n), sizeof n);
        break;
      }
      default: bad("not a built-in chunk operation");
    }
    out.ok = true;
  } catch (const std::bad_alloc&) {
    out.error = {ErrorKind::ResourceExhausted,
                 "on worker " + std::to_string(pid) + ": DArray " + op_name(call.chunk_op) +
                     ": out of memory",
                 pid, {}};
  } catch (const Error& e) {
    out.error = {e.kind(),
                 "on worker " + std::to_string(pid) + ": DArray " + op_name(call.chunk_op) +
                     ": " + e.what(),
                 pid, {}};
  }
  return out;
}

}  // namespace dj::detail
