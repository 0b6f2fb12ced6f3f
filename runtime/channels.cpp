// RemoteChannel operations from any process: served locally when this process owns the
// channel, sent to the owner by the master, or sent through the master by a worker.
#include <cstring>
#include <functional>
#include <mutex>

#include "channel_table.hpp"
#include "channels.hpp"
#include "cluster.hpp"
#include "dj/dj.hpp"
#include "remote_ref.hpp"

namespace dj::detail {
namespace {

std::mutex g_requester_mu;
MasterRequester g_requester;        // guarded by g_requester_mu; set by dj-worker's server
std::function<void()> g_block_hook;  // guarded by g_requester_mu

std::optional<ChannelTable::Clock::time_point> deadline_of(
    std::optional<std::chrono::milliseconds> timeout) {
  if (!timeout) return std::nullopt;
  return ChannelTable::Clock::now() + *timeout;
}

// Sends `op` towards the owner and returns the answer's payload. Throws the answer's error.
std::string remote(wire::ChannelOp op, std::string item) {
  std::pair<wire::Result, std::string> answer;
  if (myid() == 1) {
    answer = Cluster::instance().channel_request(op, std::move(item));
  } else {
    MasterRequester requester;
    {
      std::lock_guard lock(g_requester_mu);
      requester = g_requester;
    }
    if (!requester) {
      throw Error(ErrorKind::Internal, "RemoteChannel: this worker has no master connection");
    }
    answer = requester(op, std::move(item));
  }
  if (!answer.first.ok) throw to_error(answer.first.error);
  return std::move(answer.second);
}

}  // namespace

void set_master_requester(MasterRequester requester) {
  std::lock_guard lock(g_requester_mu);
  g_requester = std::move(requester);
}

void set_block_hook(std::function<void()> hook) {
  std::lock_guard lock(g_requester_mu);
  g_block_hook = std::move(hook);
}

void serve_channel_op(const wire::ChannelOp& op, std::string item,
                      std::function<void(wire::Result, std::string)> answer) {
  if (op.op == wire::ChannelOpKind::kCreate) {
    try {
      uint64_t id = local_channels().create(op.capacity);
      answer(wire::Result{op.request_id, true, {}},
             std::string(reinterpret_cast<const char*>(&id), sizeof id));
    } catch (const Error& e) {
      answer(wire::Result{op.request_id, false, {e.kind(), e.what(), myid(), {}}}, {});
    }
    return;
  }
  if (op.op == wire::ChannelOpKind::kRelease) {
    // Fire and forget: the releasing side waits for no answer (one would be a stray Result).
    local_channels().op(op.channel_id, op.op, {}, std::nullopt, [](ChannelResult) {});
    return;
  }
  std::optional<ChannelTable::Clock::time_point> deadline;
  if (op.timeout_ms >= 0) deadline = ChannelTable::Clock::now() + std::chrono::milliseconds(op.timeout_ms);
  uint64_t request = op.request_id;
  local_channels().op(op.channel_id, op.op, std::move(item), deadline,
                      [answer = std::move(answer), request](ChannelResult r) {
                        answer(wire::Result{request, r.ok, r.error}, std::move(r.bytes));
                      });
}

ChannelRef channel_create(int owner, uint64_t capacity) {
  if (capacity == 0) {
    throw Error(ErrorKind::InvalidArgument, "RemoteChannel: capacity must be at least 1");
  }
  if (owner == myid()) return {owner, local_channels().create(capacity)};
  wire::ChannelOp op;
  op.owner = owner;
  op.op = wire::ChannelOpKind::kCreate;
  op.capacity = capacity;
  std::string id = remote(op, {});
  ChannelRef ref{owner, 0};
  if (id.size() != sizeof ref.id) throw Error(ErrorKind::Internal, "RemoteChannel: bad create answer");
  std::memcpy(&ref.id, id.data(), sizeof ref.id);
  return ref;
}

std::string channel_call(const ChannelRef& ref, ChannelCall call, std::string item,
                         std::optional<std::chrono::milliseconds> timeout) {
  auto kind = static_cast<wire::ChannelOpKind>(call);
  if (ref.owner == myid()) {
    std::function<void()> hook;
    {
      std::lock_guard lock(g_requester_mu);
      hook = g_block_hook;
    }
    if (hook && call != ChannelCall::kIsReady && call != ChannelCall::kClose) hook();
    ChannelResult r = local_channels().op_wait(ref.id, kind, std::move(item), deadline_of(timeout));
    if (!r.ok) {
      if (timeout && r.error.kind == ErrorKind::Cancelled) {
        r.error.message += " (" + std::to_string(timeout->count()) + " ms)";
      }
      throw to_error(r.error);
    }
    return std::move(r.bytes);
  }
  wire::ChannelOp op;
  op.owner = ref.owner;
  op.channel_id = ref.id;
  op.op = kind;
  op.timeout_ms = timeout ? timeout->count() : -1;
  return remote(op, std::move(item));
}

void channel_release(const ChannelRef& ref) noexcept {
  try {
    if (ref.owner == myid()) {
      local_channels().op(ref.id, wire::ChannelOpKind::kRelease, {}, std::nullopt, [](ChannelResult) {});
      return;
    }
    Cluster* cluster = Cluster::existing();
    if (!cluster) return;
    wire::ChannelOp op;
    op.owner = ref.owner;
    op.channel_id = ref.id;
    op.op = wire::ChannelOpKind::kRelease;
    cluster->channel_send(op);
  } catch (const std::exception&) {
    // The owner is gone: so is the channel.
  }
}

}  // namespace dj::detail
