// ValueStore: the remote values a process owns (results of store-mode calls), kept until the
// master releases them. Entries are created when the call arrives ("expected"), so that a fetch
// or a pinning call that overtakes the computation waits for it instead of failing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "wire/codec.hpp"

namespace dj::detail {

struct StoredValue {
  bool ok = false;
  std::string bytes;        // Encoded value when ok.
  wire::RemoteError error;  // Why the call failed when !ok.
};
using ValuePtr = std::shared_ptr<const StoredValue>;

class ValueStore {
 public:
  using Waiter = std::function<void(const ValuePtr&)>;

  // A store-mode call for `ref` has arrived; its value will be put() later.
  void expect(uint64_t ref);

  // Records the value; returns the waiters, bound to it, for the caller to run outside any
  // lock. A value whose ref was already released is dropped at once.
  std::vector<std::function<void()>> put(uint64_t ref, ValuePtr value);

  // Keeps `ref` alive for a queued call that reads it, even if released meanwhile.
  // Returns false when the ref is unknown here.
  bool pin(uint64_t ref);
  // The pinned value (null if it was never computed), dropping the pin.
  ValuePtr take_pinned(uint64_t ref);

  // Calls `waiter` now (value known) or when put() runs. Returns false for an unknown ref.
  bool get_or_wait(uint64_t ref, Waiter waiter);

  // The master dropped its last handle: free the value once no queued call needs it.
  void release(uint64_t ref);

  struct Stats {
    uint64_t values = 0;
    uint64_t bytes = 0;
  };
  Stats stats() const;

 private:
  struct Entry {
    ValuePtr value;
    uint32_t pins = 0;
    bool released = false;
    std::vector<Waiter> waiters;
  };
  void erase_if_unused(std::unordered_map<uint64_t, Entry>::iterator it);

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;  // guarded by mu_
  uint64_t bytes_ = 0;                           // guarded by mu_
};

}  // namespace dj::detail
