// The master's side of remote values and awaited answers.
//   RefState: identity (owner, id) and completion of a store-mode call's value. Shared by every
//     Future copy and by calls that pass it as an argument; its destructor is the "last handle
//     dropped" event that releases the value on its owner.
//   Reply: one awaited message (a fetch's Result, PluginLoaded, StatsReply), completed by the
//     I/O thread or the local executor.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dj/error.hpp"
#include "wire/bulk.hpp"
#include "wire/codec.hpp"

namespace dj::detail {

enum class RefStatus { kPending, kReady, kFailed };

struct RefState {
  RefState(int owner_pid, uint64_t ref_id) : owner(owner_pid), id(ref_id) {}
  ~RefState();  // Sends Release to the owner (if it is still alive).
  RefState(const RefState&) = delete;
  RefState& operator=(const RefState&) = delete;

  // Marks the computation finished; `value` is the encoded value when the owner sent a copy.
  // Thread-safety: any thread; idempotent after the first.
  void complete(bool ok, wire::RemoteError error, std::optional<std::string> value = {});
  // Blocks until complete; throws the call's error if it failed.
  void wait() const;

  const int owner;
  const uint64_t id;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  RefStatus status = RefStatus::kPending;  // guarded by mu
  wire::RemoteError error;                 // guarded by mu
  std::optional<std::string> value;        // guarded by mu: a copy sent with completion
  std::vector<std::function<void()>> on_ready;  // guarded by mu; run once by complete()
};

struct Reply {
  // Completes the reply; runs `then` (if set) on the completing thread instead of waking a
  // waiter. Thread-safety: any thread; only the first completion counts.
  void complete(wire::Message message, std::string payload,
                std::shared_ptr<wire::BulkPayload> bulk = nullptr);
  // Blocks until complete and returns the message. Lifetime: payload stays in the Reply.
  const wire::Message& wait();

  std::function<void(Reply&)> then;  // set before the request is sent
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;       // guarded by mu
  wire::Message message;   // guarded by mu until done, then immutable
  std::string payload;     // guarded by mu until done, then immutable
  // A large payload lent by a same-host worker (then `payload` is empty); only for a waiter
  // that reads it in place (takes_bulk), else the I/O thread copies it into `payload`.
  std::shared_ptr<wire::BulkPayload> bulk;
  bool takes_bulk = false;  // set before the request is sent
  bool is_call = false;    // counts toward the worker's in-flight calls
};

// A dj::Error rebuilt from a wire error.
Error to_error(const wire::RemoteError& e);

}  // namespace dj::detail
