// Plain C++ mirrors of the messages in dj.capnp, and the codec between them and Cap'n Proto
// bytes. Only codec.cpp includes the generated header, so the rest of dj never pays for it.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "dj/error.hpp"

namespace dj::wire {

inline constexpr uint32_t kProtocolVersion = 1;
// Results up to this size ride along with CallDone, so fetching them costs no round trip.
inline constexpr size_t kInlineResultBytes = 512;
// Workers listed in one Peers message (larger clusters send several): bounds what a decoder
// builds from one message.
inline constexpr size_t kMaxPeersPerMessage = 1024;

struct RemoteError {
  ErrorKind kind = ErrorKind::Internal;
  std::string message;
  int32_t worker = 0;
  std::string kernel;
};

enum class CallMode : uint8_t { kStore, kFetch, kDiscard, kBatch };
enum class ChunkOp : uint8_t { kNone, kMap, kReduce, kSlice, kSum, kFill, kRand, kLength };

struct Hello {
  std::string cookie;
  int32_t pid = 0;
  int32_t sender_pid = 0;
  uint32_t protocol = kProtocolVersion;
};
struct Welcome {
  int32_t pid = 0;
  int64_t os_pid = 0;
  std::string hostname;
  std::string boot_id;
};
struct LoadPlugin {
  uint64_t request_id = 0;
  std::string name;
  std::string sha256;
};
struct PluginLoaded {
  uint64_t request_id = 0;
  bool ok = false;
  RemoteError error;
  uint32_t kernel_count = 0;
  bool already_loaded = false;
};
struct Call {
  uint64_t request_id = 0;
  uint64_t ref_id = 0;
  uint64_t kernel_id = 0;
  std::string kernel_name;
  std::string signature;
  CallMode mode = CallMode::kStore;
  uint32_t batch_count = 0;
  ChunkOp chunk_op = ChunkOp::kNone;
  // A compact call (wire/compact.hpp) carries neither name nor signature, only this id of the
  // signature (fnv1a64); the worker takes both from its registry.
  bool compact = false;
  uint64_t signature_id = 0;
  // Came through the ring's express slot (wire/compact.hpp): a small, ok result goes back the
  // same way.
  bool express = false;
};
struct CallDone {
  uint64_t ref_id = 0;
  bool ok = false;
  RemoteError error;
};
struct Result {
  uint64_t request_id = 0;
  bool ok = false;
  RemoteError error;
  // A compact result saying the worker lacks the compact call's kernel or signature: nothing
  // ran; send the call in full (wire/compact.hpp).
  bool resend_in_full = false;
};
struct Fetch {
  uint64_t request_id = 0;
  uint64_t ref_id = 0;
};
struct FetchRef {
  uint64_t request_id = 0;
  int32_t owner = 0;
  uint64_t ref_id = 0;
};
struct Release {
  uint64_t ref_id = 0;
};
struct StatsRequest {
  uint64_t request_id = 0;
};
struct StatsReply {
  uint64_t request_id = 0;
  uint64_t stored_values = 0;
  uint64_t stored_bytes = 0;
  uint64_t rss_bytes = 0;
  uint32_t loaded_plugins = 0;
};
struct Shutdown {
  std::string reason;
};
struct Refused {
  RemoteError error;
};
struct Interrupt {};
enum class ChannelOpKind : uint8_t { kCreate, kPut, kTake, kFetch, kIsReady, kClose, kWait, kRelease };
struct ChannelOp {
  uint64_t request_id = 0;
  int32_t owner = 0;
  uint64_t channel_id = 0;
  ChannelOpKind op = ChannelOpKind::kTake;
  int64_t timeout_ms = -1;
  uint64_t capacity = 0;
};
struct MapShared {
  uint64_t request_id = 0;
  std::string name;
  uint64_t bytes = 0;
};
struct SharedMapped {
  uint64_t request_id = 0;
  bool ok = false;
  RemoteError error;
};
struct UnmapShared {
  std::string name;
};
struct StoreValue {
  uint64_t ref_id = 0;
};
struct Peer {
  int32_t pid = 0;
  std::string address;
  std::string unix_name;
  std::string host_identity;
};
struct Peers {
  std::vector<Peer> entries;
};
struct Ping {
  uint64_t seq = 0;
};
struct Pong {
  uint64_t seq = 0;
};
struct BulkFree {
  uint64_t token = 0;
};
struct RingOffer {
  uint64_t ring_bytes = 0;
};
struct RingReady {
  bool ok = false;
  std::string error;
};

using Message = std::variant<Hello, Welcome, LoadPlugin, PluginLoaded, Call, CallDone, Result,
                             Fetch, FetchRef, Release, StatsRequest, StatsReply, Shutdown, Refused,
                             Interrupt, ChannelOp, MapShared, SharedMapped, UnmapShared,
                             StoreValue, Peers, Ping, Pong, BulkFree, RingOffer, RingReady>;

// Serialises `message` as a Cap'n Proto flat array (length is a multiple of 8).
std::string encode(const Message& message);

// Parses bytes produced by encode(). Throws dj::Error(InvalidArgument) naming the problem for
// anything malformed: truncated, unaligned, over the traversal limit, unknown union member.
Message decode(const std::string& bytes);
Message decode(const char* data, size_t size);

// Human-readable name of the message's type, for protocol-violation logs.
const char* message_name(const Message& message);

}  // namespace dj::wire
