// Compact frames for the same-host remotecall_fetch round trip (see compact.hpp).
#include "wire/compact.hpp"

#include <cstring>

#include "wire/frame.hpp"

namespace dj::wire {
namespace {

// Prefix and header in one buffer, then the payload: one write into the ring.
template <size_t kWords>
void write_compact(Outlet out, uint32_t magic, const uint64_t (&fields)[kWords],
                   const char* payload, size_t payload_bytes) {
  constexpr auto header_bytes = static_cast<uint32_t>(kWords * 8);
  unsigned char head[kFramePrefixBytes + header_bytes];
  const uint64_t pb = payload_bytes;
  std::memcpy(head, &magic, 4);
  std::memcpy(head + 4, &header_bytes, 4);
  std::memcpy(head + 8, &pb, 8);
  std::memcpy(head + kFramePrefixBytes, fields, header_bytes);
  iovec iov[2] = {{head, sizeof head}, {const_cast<char*>(payload), payload_bytes}};
  write_parts(out, iov, payload_bytes ? 2 : 1);
}

}  // namespace

void write_compact_call(Outlet out, uint64_t request_id, uint64_t kernel_id,
                        uint64_t signature_id, const char* args, size_t args_bytes) {
  const uint64_t fields[3] = {request_id, kernel_id, signature_id};
  static_assert(sizeof fields == kCompactCallHeaderBytes);
  write_compact(out, kCompactCallMagic, fields, args, args_bytes);
}

void write_compact_result(Outlet out, uint64_t request_id, CompactStatus status,
                          const char* value, size_t value_bytes) {
  const uint64_t fields[2] = {request_id, static_cast<uint64_t>(status)};
  static_assert(sizeof fields == kCompactResultHeaderBytes);
  write_compact(out, kCompactResultMagic, fields, value, value_bytes);
}

uint32_t compact_header_bytes(uint32_t magic) {
  if (magic == kCompactCallMagic) return kCompactCallHeaderBytes;
  if (magic == kCompactResultMagic) return kCompactResultHeaderBytes;
  return 0;
}

Message decode_compact(uint32_t magic, const unsigned char* header) {
  // The fields as write_compact put them: an array of u64.
  const uint32_t bytes = compact_header_bytes(magic);
  if (bytes == 0) throw Error(ErrorKind::InvalidArgument, "dj wire: not a compact frame");
  uint64_t fields[kCompactCallHeaderBytes / 8] = {};
  std::memcpy(fields, header, bytes);
  if (magic == kCompactCallMagic) {
    Call call;
    call.request_id = fields[0];
    call.kernel_id = fields[1];
    call.signature_id = fields[2];
    call.mode = CallMode::kFetch;
    call.compact = true;
    return call;
  }
  Result result;
  result.request_id = fields[0];
  const uint64_t status = fields[1];
  if (status > static_cast<uint64_t>(CompactStatus::kResendInFull)) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: compact result with unknown status " + std::to_string(status));
  }
  result.ok = status == static_cast<uint64_t>(CompactStatus::kOk);
  result.resend_in_full = !result.ok;
  return result;
}

}  // namespace dj::wire
