// Bounds-checked decoding of argument lists, batches and batch results.
#include "arg_blob.hpp"

#include <algorithm>
#include <cstring>

namespace dj::detail {
namespace {

template <class T>
T load(std::string_view blob, size_t& at) {
  if (blob.size() - at < sizeof(T)) {
    throw Error(ErrorKind::InvalidArgument, "dj: argument list ends early at byte " +
                                                std::to_string(at) + " of " +
                                                std::to_string(blob.size()));
  }
  T v;
  std::memcpy(&v, blob.data() + at, sizeof v);
  at += sizeof v;
  return v;
}

}  // namespace

std::vector<ParsedArg> parse_args(const std::string& blob) {
  return parse_args(blob.data(), blob.size());
}

std::vector<ParsedArg> parse_args(const char* data, size_t size) {
  std::string_view blob(data, size);
  size_t at = 0;
  auto count = load<uint32_t>(blob, at);
  // Checked against what the bytes can hold before anything is allocated: a corrupt count
  // never costs more memory than the blob itself justifies.
  if (count > (blob.size() - at) / kMinArgBytes) {
    throw Error(ErrorKind::InvalidArgument, "dj: argument count " + std::to_string(count) +
                                                " exceeds what " + std::to_string(blob.size()) +
                                                " bytes can hold");
  }
  std::vector<ParsedArg> args(count);
  for (auto& a : args) {
    auto tag = load<uint8_t>(blob, at);
    if (tag == 2) {
      auto pad = load<uint8_t>(blob, at);
      if (pad > 7 || pad > blob.size() - at) {
        throw Error(ErrorKind::InvalidArgument, "dj: bad argument padding " + std::to_string(pad));
      }
      at += pad;
    }
    if (tag == 0 || tag == 2) {
      auto len = load<uint64_t>(blob, at);
      if (len > blob.size() - at) {
        throw Error(ErrorKind::InvalidArgument, "dj: argument of " + std::to_string(len) +
                                                    " bytes overruns the argument list");
      }
      a.offset = at;
      a.size = static_cast<size_t>(len);
      at += a.size;
    } else if (tag == 1) {
      a.is_ref = true;
      a.owner = load<int32_t>(blob, at);
      a.ref = load<uint64_t>(blob, at);
    } else {
      throw Error(ErrorKind::InvalidArgument, "dj: unknown argument tag " + std::to_string(tag));
    }
  }
  if (at != blob.size()) {
    throw Error(ErrorKind::InvalidArgument, "dj: " + std::to_string(blob.size() - at) +
                                                " stray bytes after the arguments");
  }
  return args;
}

std::string_view next_batch_element(std::string_view batch, size_t& at) {
  auto len = load<uint64_t>(batch, at);
  if (len > batch.size() - at) {
    throw Error(ErrorKind::InvalidArgument, "dj: batch element overruns the payload");
  }
  std::string_view element = batch.substr(at, static_cast<size_t>(len));
  at += element.size();
  return element;
}

std::vector<BatchSlot> index_batch_results(const std::string& payload, uint32_t count) {
  // Each outcome takes at least a tag and a length: refuse a count the bytes cannot hold
  // before allocating the slots.
  if (count > payload.size() / (1 + 8)) {
    throw Error(ErrorKind::InvalidArgument, "dj: malformed batch result (" +
                                                std::to_string(count) + " outcomes in " +
                                                std::to_string(payload.size()) + " bytes)");
  }
  std::vector<BatchSlot> slots(count);
  size_t at = 0;
  for (auto& slot : slots) {
    auto tag = load<uint8_t>(payload, at);
    auto len = load<uint64_t>(payload, at);
    if (len > payload.size() - at || tag == 0) {
      throw Error(ErrorKind::InvalidArgument, "dj: malformed batch result");
    }
    slot.ok = tag == 1;
    if (!slot.ok) {
      slot.kind = static_cast<ErrorKind>(
          std::min<int>(tag - 2, static_cast<int>(ErrorKind::Cancelled)));
    }
    slot.offset = at;
    slot.size = static_cast<size_t>(len);
    at += slot.size;
  }
  return slots;
}

}  // namespace dj::detail
