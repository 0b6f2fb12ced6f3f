// Walking encoded values by type name: see type_walk.hpp.
#include "type_walk.hpp"

#include <cstdint>
#include <cstring>
#include <optional>

#include "dj/error.hpp"

namespace dj::detail {
namespace {

[[noreturn]] void bad(const std::string& what) {
  throw Error(ErrorKind::InvalidArgument, "dj: " + what);
}

// The top-level comma-separated parts of "A,B<C,D>,E{F,G}".
std::vector<std::string_view> split_list(std::string_view list) {
  std::vector<std::string_view> parts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    char c = list[i];
    if (c == '<' || c == '{' || c == '(') ++depth;
    else if (c == '>' || c == '}' || c == ')') --depth;
    else if (c == ',' && depth == 0) {
      parts.push_back(list.substr(start, i - start));
      start = i + 1;
    }
    if (depth < 0) bad("unbalanced type name '" + std::string(list) + "'");
  }
  if (depth != 0) bad("unbalanced type name '" + std::string(list) + "'");
  if (start < list.size()) parts.push_back(list.substr(start));
  return parts;
}

// "vec<f64>" with head "vec" -> "f64"; nullopt when `type` is not head<...>.
std::optional<std::string_view> inner(std::string_view type, std::string_view head) {
  if (type.size() < head.size() + 2 || type.substr(0, head.size()) != head ||
      type[head.size()] != '<' || type.back() != '>') {
    return std::nullopt;
  }
  return type.substr(head.size() + 1, type.size() - head.size() - 2);
}

std::optional<size_t> scalar_size(std::string_view t) {
  if (t == "bool" || t == "i8" || t == "u8") return 1;
  if (t == "i16" || t == "u16") return 2;
  if (t == "i32" || t == "u32" || t == "f32") return 4;
  if (t == "i64" || t == "u64" || t == "f64") return 8;
  return std::nullopt;
}

// Members of a struct name "Name{A,B}" or a tuple "tup<A,B>".
std::optional<std::vector<std::string_view>> members(std::string_view t) {
  if (auto list = inner(t, "tup")) return split_list(*list);
  auto brace = t.find('{');
  if (brace != std::string_view::npos && brace > 0 && t.back() == '}') {
    return split_list(t.substr(brace + 1, t.size() - brace - 2));
  }
  return std::nullopt;
}

std::optional<std::pair<std::string_view, size_t>> array_of(std::string_view t) {
  auto list = inner(t, "arr");
  if (!list) return std::nullopt;
  auto parts = split_list(*list);
  if (parts.size() != 2) bad("bad array type name '" + std::string(t) + "'");
  size_t n = 0;
  for (char c : parts[1]) {
    if (c < '0' || c > '9') bad("bad array length in '" + std::string(t) + "'");
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  return std::make_pair(parts[0], n);
}

// Encoded size of every value of type t, when it does not depend on the value.
std::optional<size_t> fixed_size(std::string_view t) {
  if (auto s = scalar_size(t)) return s;
  if (auto a = array_of(t)) {
    auto e = fixed_size(a->first);
    if (!e) return std::nullopt;
    return *e * a->second;
  }
  if (auto m = members(t)) {
    size_t total = 0;
    for (auto part : *m) {
      auto e = fixed_size(part);
      if (!e) return std::nullopt;
      total += *e;
    }
    return total;
  }
  return std::nullopt;
}

class Cursor {
 public:
  Cursor(const unsigned char* p, size_t n) : p_(p), end_(p + n) {}
  const unsigned char* at() const { return p_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  void skip(size_t n) {
    if (n > left()) bad("encoded value ends early (need " + std::to_string(n) + " bytes, have " +
                        std::to_string(left()) + ")");
    p_ += n;
  }
  uint64_t u64() {
    uint64_t v;
    if (left() < sizeof v) skip(sizeof v);  // throws
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    return v;
  }
  // Skips n values of `size` bytes each, refusing counts the bytes cannot hold.
  void skip_n(uint64_t n, size_t size) {
    if (size != 0 && n > left() / size) {
      bad("encoded count " + std::to_string(n) + " exceeds the " + std::to_string(left()) +
          " bytes left");
    }
    skip(static_cast<size_t>(n) * size);
  }

 private:
  const unsigned char* p_;
  const unsigned char* end_;
};

void skip_value(std::string_view t, Cursor& c);

void skip_many(std::string_view t, uint64_t n, Cursor& c) {
  if (auto size = fixed_size(t)) return c.skip_n(n, *size);
  if (n > c.left()) bad("encoded count " + std::to_string(n) + " exceeds the bytes left");
  for (uint64_t i = 0; i < n; ++i) skip_value(t, c);
}

void skip_value(std::string_view t, Cursor& c) {
  if (auto size = fixed_size(t)) return c.skip(*size);
  if (t == "str") return c.skip_n(c.u64(), 1);
  if (auto e = inner(t, "vec")) return skip_many(*e, c.u64(), c);
  if (auto e = inner(t, "mat")) {
    uint64_t rows = c.u64(), cols = c.u64();
    if (cols != 0 && rows > c.left() / cols) bad("encoded matrix is larger than its bytes");
    return skip_many(*e, rows * cols, c);
  }
  if (auto a = array_of(t)) return skip_many(a->first, a->second, c);
  if (auto m = members(t)) {
    for (auto part : *m) skip_value(part, c);
    return;
  }
  bad("unknown type name '" + std::string(t) + "'");
}

}  // namespace

std::vector<std::pair<const unsigned char*, size_t>> split_elements(std::string_view element_type,
                                                                   const unsigned char* data,
                                                                   size_t size) {
  Cursor c(data, size);
  uint64_t n = c.u64();
  std::vector<std::pair<const unsigned char*, size_t>> out;
  if (auto fixed = fixed_size(element_type)) {
    if (*fixed == 0 ? n != 0 : n > c.left() / *fixed) {
      bad("encoded count " + std::to_string(n) + " exceeds the bytes left");
    }
    out.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      out.emplace_back(c.at(), *fixed);
      c.skip(*fixed);
    }
  } else {
    if (n > c.left()) bad("encoded count " + std::to_string(n) + " exceeds the bytes left");
    for (uint64_t i = 0; i < n; ++i) {
      const unsigned char* start = c.at();
      skip_value(element_type, c);
      out.emplace_back(start, static_cast<size_t>(c.at() - start));
    }
  }
  if (c.left() != 0) {
    bad(std::to_string(c.left()) + " stray bytes after the last element of a vec<" +
        std::string(element_type) + ">");
  }
  return out;
}

std::pair<std::vector<std::string>, std::string> split_signature(std::string_view signature) {
  auto arrow = signature.rfind(")->");
  if (signature.empty() || signature.front() != '(' || arrow == std::string_view::npos) {
    bad("malformed signature '" + std::string(signature) + "'");
  }
  std::vector<std::string> args;
  for (auto part : split_list(signature.substr(1, arrow - 1))) args.emplace_back(part);
  return {std::move(args), std::string(signature.substr(arrow + 3))};
}

}  // namespace dj::detail
