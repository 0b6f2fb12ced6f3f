// Ownership bookkeeping for remote values: expected -> computed -> released (+ pins, waiters).
#include "value_store.hpp"

namespace dj::detail {

void ValueStore::expect(uint64_t ref) {
  std::lock_guard lock(mu_);
  entries_.try_emplace(ref);
}

std::vector<std::function<void()>> ValueStore::put(uint64_t ref, ValuePtr value) {
  std::vector<std::function<void()>> ready;
  std::lock_guard lock(mu_);
  auto it = entries_.try_emplace(ref).first;
  Entry& e = it->second;
  if (e.value) bytes_ -= e.value->bytes.size();
  e.value = std::move(value);
  bytes_ += e.value->bytes.size();
  for (auto& w : e.waiters) ready.push_back([w = std::move(w), v = e.value] { w(v); });
  e.waiters.clear();
  erase_if_unused(it);
  return ready;
}

bool ValueStore::pin(uint64_t ref) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ref);
  if (it == entries_.end()) return false;
  ++it->second.pins;
  return true;
}

ValuePtr ValueStore::take_pinned(uint64_t ref) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ref);
  if (it == entries_.end()) return nullptr;
  ValuePtr v = it->second.value;
  if (it->second.pins) --it->second.pins;
  erase_if_unused(it);
  return v;
}

bool ValueStore::get_or_wait(uint64_t ref, Waiter waiter) {
  ValuePtr v;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(ref);
    if (it == entries_.end() || (it->second.released && !it->second.value)) return false;
    if (!it->second.value) {
      it->second.waiters.push_back(std::move(waiter));
      return true;
    }
    v = it->second.value;
  }
  waiter(v);
  return true;
}

void ValueStore::release(uint64_t ref) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(ref);
  if (it == entries_.end()) return;  // Already gone (or never stored: remote_do).
  it->second.released = true;
  erase_if_unused(it);
}

void ValueStore::erase_if_unused(std::unordered_map<uint64_t, Entry>::iterator it) {
  Entry& e = it->second;
  // A released entry still expecting its value stays until put() so that the value, when it
  // comes, is dropped instead of kept forever.
  if (e.released && e.pins == 0 && e.waiters.empty() && e.value) {
    bytes_ -= e.value->bytes.size();
    entries_.erase(it);
  }
}

ValueStore::Stats ValueStore::stats() const {
  std::lock_guard lock(mu_);
  uint64_t values = 0;
  for (const auto& [ref, e] : entries_) values += e.value && !e.released ? 1 : 0;
  return {values, bytes_};
}

}  // namespace dj::detail
