// Converts between dj::wire::Message and Cap'n Proto bytes. The only translation unit that
// includes the generated dj.capnp.h, so the schema's compile cost is paid once.
#include "wire/codec.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <kj/exception.h>

#include "dj.capnp.h"

namespace dj::wire {
namespace {

namespace s = schema;

template <class... F>
struct Overload : F... {
  using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;

s::ErrorKind to_wire(ErrorKind k) {
  switch (k) {
    case ErrorKind::InvalidArgument: return s::ErrorKind::INVALID_ARGUMENT;
    case ErrorKind::NotFound: return s::ErrorKind::NOT_FOUND;
    case ErrorKind::RemoteFailure: return s::ErrorKind::REMOTE_FAILURE;
    case ErrorKind::Disconnected: return s::ErrorKind::DISCONNECTED;
    case ErrorKind::ResourceExhausted: return s::ErrorKind::RESOURCE_EXHAUSTED;
    case ErrorKind::Internal: return s::ErrorKind::INTERNAL;
    case ErrorKind::Cancelled: return s::ErrorKind::CANCELLED;
  }
  return s::ErrorKind::INTERNAL;
}

ErrorKind from_wire(s::ErrorKind k) {
  switch (k) {
    case s::ErrorKind::INVALID_ARGUMENT: return ErrorKind::InvalidArgument;
    case s::ErrorKind::NOT_FOUND: return ErrorKind::NotFound;
    case s::ErrorKind::REMOTE_FAILURE: return ErrorKind::RemoteFailure;
    case s::ErrorKind::DISCONNECTED: return ErrorKind::Disconnected;
    case s::ErrorKind::RESOURCE_EXHAUSTED: return ErrorKind::ResourceExhausted;
    case s::ErrorKind::INTERNAL: return ErrorKind::Internal;
    case s::ErrorKind::CANCELLED: return ErrorKind::Cancelled;
  }
  return ErrorKind::Internal;  // An enumerant from a newer peer.
}

kj::ArrayPtr<const kj::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}
kj::StringPtr text_of(const std::string& s) { return {s.c_str(), s.size()}; }
std::string str(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }
std::string str(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

void put(s::RemoteError::Builder b, const RemoteError& e) {
  b.setKind(to_wire(e.kind));
  b.setMessage(text_of(e.message));
  b.setWorker(e.worker);
  b.setKernel(text_of(e.kernel));
}
RemoteError get(s::RemoteError::Reader r) {
  return {from_wire(r.getKind()), str(r.getMessage()), r.getWorker(), str(r.getKernel())};
}

s::CallMode to_wire(CallMode m) {
  switch (m) {
    case CallMode::kStore: return s::CallMode::STORE;
    case CallMode::kFetch: return s::CallMode::FETCH;
    case CallMode::kDiscard: return s::CallMode::DISCARD;
    case CallMode::kBatch: return s::CallMode::BATCH;
  }
  return s::CallMode::STORE;
}

void build(s::Message::Builder m, const Message& message) {
  std::visit(
      Overload{
          [&](const Hello& v) {
            auto b = m.initHello();
            b.setCookie(bytes_of(v.cookie));
            b.setPid(v.pid);
            b.setSenderPid(v.sender_pid);
            b.setProtocol(v.protocol);
          },
          [&](const Welcome& v) {
            auto b = m.initWelcome();
            b.setPid(v.pid);
            b.setOsPid(v.os_pid);
            b.setHostname(text_of(v.hostname));
            b.setBootId(text_of(v.boot_id));
          },
          [&](const LoadPlugin& v) {
            auto b = m.initLoadPlugin();
            b.setRequestId(v.request_id);
            b.setName(text_of(v.name));
            b.setSha256(bytes_of(v.sha256));
          },
          [&](const PluginLoaded& v) {
            auto b = m.initPluginLoaded();
            b.setRequestId(v.request_id);
            b.setOk(v.ok);
            if (!v.ok) put(b.initError(), v.error);
            b.setKernelCount(v.kernel_count);
            b.setAlreadyLoaded(v.already_loaded);
          },
          [&](const Call& v) {
            auto b = m.initCall();
            b.setRequestId(v.request_id);
            b.setRefId(v.ref_id);
            b.setKernelId(v.kernel_id);
            b.setKernelName(text_of(v.kernel_name));
            b.setSignature(text_of(v.signature));
            b.setMode(to_wire(v.mode));
            b.setBatchCount(v.batch_count);
            b.setChunkOp(static_cast<s::ChunkOp>(v.chunk_op));
          },
          [&](const CallDone& v) {
            auto b = m.initCallDone();
            b.setRefId(v.ref_id);
            b.setOk(v.ok);
            if (!v.ok) put(b.initError(), v.error);
          },
          [&](const Result& v) {
            auto b = m.initResult();
            b.setRequestId(v.request_id);
            b.setOk(v.ok);
            if (!v.ok) put(b.initError(), v.error);
          },
          [&](const Fetch& v) {
            auto b = m.initFetch();
            b.setRequestId(v.request_id);
            b.setRefId(v.ref_id);
          },
          [&](const FetchRef& v) {
            auto b = m.initFetchRef();
            b.setRequestId(v.request_id);
            b.setOwner(v.owner);
            b.setRefId(v.ref_id);
          },
          [&](const Release& v) { m.initRelease().setRefId(v.ref_id); },
          [&](const StatsRequest& v) { m.initStatsRequest().setRequestId(v.request_id); },
          [&](const StatsReply& v) {
            auto b = m.initStatsReply();
            b.setRequestId(v.request_id);
            b.setStoredValues(v.stored_values);
            b.setStoredBytes(v.stored_bytes);
            b.setRssBytes(v.rss_bytes);
            b.setLoadedPlugins(v.loaded_plugins);
          },
          [&](const Shutdown& v) { m.initShutdown().setReason(text_of(v.reason)); },
          [&](const Refused& v) { put(m.initRefused(), v.error); },
          [&](const Interrupt&) { m.initInterrupt(); },
          [&](const ChannelOp& v) {
            auto b = m.initChannelOp();
            b.setRequestId(v.request_id);
            b.setOwner(v.owner);
            b.setChannelId(v.channel_id);
            b.setOp(static_cast<s::ChannelOpKind>(v.op));
            b.setTimeoutMs(v.timeout_ms);
            b.setCapacity(v.capacity);
          },
          [&](const MapShared& v) {
            auto b = m.initMapShared();
            b.setRequestId(v.request_id);
            b.setName(text_of(v.name));
            b.setBytes(v.bytes);
          },
          [&](const SharedMapped& v) {
            auto b = m.initSharedMapped();
            b.setRequestId(v.request_id);
            b.setOk(v.ok);
            if (!v.ok) put(b.initError(), v.error);
          },
          [&](const UnmapShared& v) { m.initUnmapShared().setName(text_of(v.name)); },
          [&](const StoreValue& v) { m.initStoreValue().setRefId(v.ref_id); },
          [&](const Ping& v) { m.initPing().setSeq(v.seq); },
          [&](const Pong& v) { m.initPong().setSeq(v.seq); },
          [&](const BulkFree& v) { m.initBulkFree().setToken(v.token); },
          [&](const RingOffer& v) { m.initRingOffer().setRingBytes(v.ring_bytes); },
          [&](const RingReady& v) {
            auto r = m.initRingReady();
            r.setOk(v.ok);
            r.setError(v.error);
          },
          [&](const Peers& v) {
            auto list = m.initPeers().initEntries(static_cast<unsigned>(v.entries.size()));
            for (unsigned i = 0; i < list.size(); ++i) {
              const Peer& e = v.entries[i];
              list[i].setPid(e.pid);
              list[i].setAddress(text_of(e.address));
              list[i].setUnixName(text_of(e.unix_name));
              list[i].setHostIdentity(text_of(e.host_identity));
            }
          },
      },
      message);
}

Message parse(s::Message::Reader m) {
  switch (m.which()) {
    case s::Message::HELLO: {
      auto r = m.getHello();
      return Hello{str(r.getCookie()), r.getPid(), r.getSenderPid(), r.getProtocol()};
    }
    case s::Message::WELCOME: {
      auto r = m.getWelcome();
      return Welcome{r.getPid(), r.getOsPid(), str(r.getHostname()), str(r.getBootId())};
    }
    case s::Message::LOAD_PLUGIN: {
      auto r = m.getLoadPlugin();
      return LoadPlugin{r.getRequestId(), str(r.getName()), str(r.getSha256())};
    }
    case s::Message::PLUGIN_LOADED: {
      auto r = m.getPluginLoaded();
      return PluginLoaded{r.getRequestId(), r.getOk(), get(r.getError()), r.getKernelCount(),
                          r.getAlreadyLoaded()};
    }
    case s::Message::CALL: {
      auto r = m.getCall();
      CallMode mode = CallMode::kStore;
      switch (r.getMode()) {
        case s::CallMode::STORE: mode = CallMode::kStore; break;
        case s::CallMode::FETCH: mode = CallMode::kFetch; break;
        case s::CallMode::DISCARD: mode = CallMode::kDiscard; break;
        case s::CallMode::BATCH: mode = CallMode::kBatch; break;
        default: throw Error(ErrorKind::InvalidArgument, "dj wire: unknown call mode");
      }
      auto chunk_op = static_cast<uint16_t>(r.getChunkOp());
      if (chunk_op > static_cast<uint16_t>(ChunkOp::kLength)) {
        throw Error(ErrorKind::InvalidArgument, "dj wire: unknown chunk operation");
      }
      return Call{r.getRequestId(),       r.getRefId(),          r.getKernelId(),
                  str(r.getKernelName()), str(r.getSignature()), mode, r.getBatchCount(),
                  static_cast<ChunkOp>(chunk_op)};
    }
    case s::Message::CALL_DONE: {
      auto r = m.getCallDone();
      return CallDone{r.getRefId(), r.getOk(), get(r.getError())};
    }
    case s::Message::RESULT: {
      auto r = m.getResult();
      return Result{r.getRequestId(), r.getOk(), get(r.getError())};
    }
    case s::Message::FETCH: {
      auto r = m.getFetch();
      return Fetch{r.getRequestId(), r.getRefId()};
    }
    case s::Message::FETCH_REF: {
      auto r = m.getFetchRef();
      return FetchRef{r.getRequestId(), r.getOwner(), r.getRefId()};
    }
    case s::Message::RELEASE: return Release{m.getRelease().getRefId()};
    case s::Message::STATS_REQUEST: return StatsRequest{m.getStatsRequest().getRequestId()};
    case s::Message::STATS_REPLY: {
      auto r = m.getStatsReply();
      return StatsReply{r.getRequestId(), r.getStoredValues(), r.getStoredBytes(),
                        r.getRssBytes(), r.getLoadedPlugins()};
    }
    case s::Message::SHUTDOWN: return Shutdown{str(m.getShutdown().getReason())};
    case s::Message::REFUSED: return Refused{get(m.getRefused())};
    case s::Message::INTERRUPT: return Interrupt{};
    case s::Message::CHANNEL_OP: {
      auto r = m.getChannelOp();
      auto op = static_cast<uint16_t>(r.getOp());
      if (op > static_cast<uint16_t>(ChannelOpKind::kRelease)) {
        throw Error(ErrorKind::InvalidArgument, "dj wire: unknown channel op " + std::to_string(op));
      }
      return ChannelOp{r.getRequestId(), r.getOwner(), r.getChannelId(),
                       static_cast<ChannelOpKind>(op), r.getTimeoutMs(), r.getCapacity()};
    }
    case s::Message::MAP_SHARED: {
      auto r = m.getMapShared();
      return MapShared{r.getRequestId(), str(r.getName()), r.getBytes()};
    }
    case s::Message::SHARED_MAPPED: {
      auto r = m.getSharedMapped();
      return SharedMapped{r.getRequestId(), r.getOk(), get(r.getError())};
    }
    case s::Message::UNMAP_SHARED: return UnmapShared{str(m.getUnmapShared().getName())};
    case s::Message::STORE_VALUE: return StoreValue{m.getStoreValue().getRefId()};
    case s::Message::PING: return Ping{m.getPing().getSeq()};
    case s::Message::PONG: return Pong{m.getPong().getSeq()};
    case s::Message::BULK_FREE: return BulkFree{m.getBulkFree().getToken()};
    case s::Message::RING_OFFER: return RingOffer{m.getRingOffer().getRingBytes()};
    case s::Message::RING_READY:
      return RingReady{m.getRingReady().getOk(), str(m.getRingReady().getError())};
    case s::Message::PEERS: {
      Peers out;
      auto entries = m.getPeers().getEntries();
      if (entries.size() > kMaxPeersPerMessage) {
        throw Error(ErrorKind::InvalidArgument,
                    "dj wire: Peers lists " + std::to_string(entries.size()) +
                        " workers, more than " + std::to_string(kMaxPeersPerMessage));
      }
      out.entries.reserve(entries.size());
      for (auto e : entries) {
        out.entries.push_back(Peer{e.getPid(), str(e.getAddress()), str(e.getUnixName()),
                                   str(e.getHostIdentity())});
      }
      return out;
    }
  }
  throw Error(ErrorKind::InvalidArgument, "dj wire: unknown message type " +
                                              std::to_string(static_cast<int>(m.which())));
}

}  // namespace

std::string encode(const Message& message) {
  // Messages are a few dozen words: a small first segment, and the flat form (segment table +
  // segment) written straight into the result, without messageToFlatArray's extra copy.
  capnp::MallocMessageBuilder builder(32);
  build(builder.initRoot<s::Message>(), message);
  auto segments = builder.getSegmentsForOutput();
  if (segments.size() != 1) {
    auto words = capnp::messageToFlatArray(builder);
    auto bytes = words.asBytes();
    return {reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
  }
  auto segment = segments[0].asBytes();
  uint32_t table[2] = {0, static_cast<uint32_t>(segments[0].size())};  // one segment, its words
  std::string out;
  out.reserve(sizeof table + segment.size());
  out.append(reinterpret_cast<const char*>(table), sizeof table);
  out.append(reinterpret_cast<const char*>(segment.begin()), segment.size());
  return out;
}

Message decode(const std::string& bytes) { return decode(bytes.data(), bytes.size()); }

Message decode(const char* data, size_t size) {
  if (size == 0 || size % sizeof(capnp::word) != 0) {
    throw Error(ErrorKind::InvalidArgument,
                "dj wire: message of " + std::to_string(size) +
                    " bytes is not a whole number of 8-byte words");
  }
  // Cap'n Proto refuses unaligned input: read in place when aligned, else copy (headers are
  // small: a stack buffer covers nearly all of them).
  capnp::word stack[64];
  kj::Array<capnp::word> heap;
  const capnp::word* words = reinterpret_cast<const capnp::word*>(data);
  if (reinterpret_cast<uintptr_t>(data) % alignof(capnp::word) != 0) {
    capnp::word* copy = stack;
    if (size > sizeof stack) {
      heap = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
      copy = heap.begin();
    }
    std::memcpy(copy, data, size);
    words = copy;
  }
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = 1u << 20;  // Headers are small; payloads ride outside.
    options.nestingLimit = 16;
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, size / sizeof(capnp::word)), options);
    return parse(reader.getRoot<s::Message>());
  } catch (const kj::Exception& e) {
    throw Error(ErrorKind::InvalidArgument,
                std::string("dj wire: malformed message: ") + e.getDescription().cStr());
  }
}

const char* message_name(const Message& message) {
  static constexpr const char* kNames[] = {
      "Hello",  "Welcome",  "LoadPlugin", "PluginLoaded", "Call",         "CallDone",   "Result",
      "Fetch",  "FetchRef", "Release",    "StatsRequest", "StatsReply",   "Shutdown",   "Refused",
      "Interrupt", "ChannelOp", "MapShared", "SharedMapped", "UnmapShared", "StoreValue", "Peers", "Ping", "Pong",
      "BulkFree", "RingOffer", "RingReady"};
  static_assert(std::size(kNames) == std::variant_size_v<Message>);
  return kNames[message.index()];
}

}  // namespace dj::wire
