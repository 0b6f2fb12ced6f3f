// Compact frames: the two messages of a same-host remotecall_fetch, in a fixed binary header
// instead of a Cap'n Proto one, so that the hot round trip allocates nothing and parses in a
// few loads. They stand for a wire::Call and a wire::Result (dj.capnp documents both) and are
// read into those structs; everything else keeps its Cap'n Proto header.
//
//   compact call   'DJ03', header 24 bytes: u64 request id, u64 kernel id, u64 signature id
//                  (fnv1a64 of the C++ signature); payload: the argument blob. Mode fetch.
//   compact result 'DJ04', header 16 bytes: u64 request id, u64 status; payload: the value.
//                  Status 0: ok. Status 1: the kernel id or signature id is not one this
//                  worker has; nothing ran, and the caller sends the call in full (whose
//                  answer then names the kernel and both signatures).
//
// A worker answers a compact call with a compact result when the call succeeded with a small
// value kept in memory; otherwise (an error, a result lent from shared memory) with an
// ordinary Result frame of the same request id.
//
// The same two messages also go through a ring's express slots (wire/ring.hpp), without a
// frame, numbered by the slot's sequence (express_request_id gives their request id):
//   express call   tag kExpressCallTag; bytes: u64 kernel id, u64 signature id, then the
//                  argument blob.
//   express answer tag: the CompactStatus; bytes: the value (status ok).
// A worker answers an express call through its own slot when the call succeeded with a value
// that fits there; otherwise with an ordinary Result frame in the ring, of that request id.
#pragma once

#include <cstddef>
#include <cstdint>

#include "wire/codec.hpp"
#include "wire/outlet.hpp"

namespace dj::wire {

inline constexpr uint32_t kCompactCallMagic = 0x33304a44;    // 'DJ03'
inline constexpr uint32_t kCompactResultMagic = 0x34304a44;  // 'DJ04'
inline constexpr uint32_t kCompactCallHeaderBytes = 24;
inline constexpr uint32_t kCompactResultHeaderBytes = 16;
// Largest value a worker sends in a compact result (larger ones go as ordinary, maybe bulk,
// frames).
inline constexpr size_t kCompactResultMaxBytes = 64 * 1024;

enum class CompactStatus : uint64_t { kOk = 0, kResendInFull = 1 };
inline constexpr uint32_t kExpressCallTag = 0x45;  // 'E'
inline constexpr size_t kExpressCallHeaderBytes = 16;
// The request id of express call `seq`: the top two bits set, apart from the ids the master
// gives other requests.
constexpr uint64_t express_request_id(uint32_t seq) { return uint64_t{3} << 62 | seq; }

// Throws: dj::Error(Disconnected) when the peer is gone. Callers serialise writes.
void write_compact_call(Outlet out, uint64_t request_id, uint64_t kernel_id,
                        uint64_t signature_id, const char* args, size_t args_bytes);
void write_compact_result(Outlet out, uint64_t request_id, CompactStatus status,
                          const char* value = nullptr, size_t value_bytes = 0);

// The header's size for a compact magic, or 0 when `magic` is not one.
uint32_t compact_header_bytes(uint32_t magic);
// The Call or Result a compact header stands for. Throws: InvalidArgument for an unknown status.
Message decode_compact(uint32_t magic, const unsigned char* header);

}  // namespace dj::wire
