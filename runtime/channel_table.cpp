// RemoteChannel storage on the owning process: items, blocked takers and putters, deadlines.
#include "channel_table.hpp"

#include "dj/dj.hpp"

namespace dj::detail {

ChannelTable::~ChannelTable() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    timer_cv_.notify_all();
  }
  if (timer_.joinable()) timer_.join();
}

ChannelResult ChannelTable::failure(ErrorKind kind, const std::string& message,
                                    uint64_t id) const {
  ChannelResult r;
  r.error = {kind,
             "RemoteChannel " + std::to_string(id) + " on process " + std::to_string(owner_.load()) +
                 ": " + message,
             owner_.load(), {}};
  return r;
}

uint64_t ChannelTable::create(uint64_t capacity) {
  if (capacity == 0) {
    throw Error(ErrorKind::InvalidArgument, "RemoteChannel: capacity must be at least 1");
  }
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  channels_[id].capacity = capacity;
  return id;
}

void ChannelTable::serve(Channel& c, Ready& ready) {
  for (;;) {
    bool progressed = false;
    // Blocked putters move in while there is room.
    while (!c.putters.empty() && c.items.size() < c.capacity) {
      Waiter w = std::move(c.putters.front());
      c.putters.pop_front();
      c.items.push_back(std::move(w.item));
      ready.push_back({std::move(w.done), ChannelResult{true, {}, {}}});
      progressed = true;
    }
    // Waiters in arrival order: fetch/wait see the head, take removes it.
    while (!c.takers.empty() && !c.items.empty()) {
      Waiter w = std::move(c.takers.front());
      c.takers.pop_front();
      ChannelResult r{true, {}, {}};
      if (w.kind == ChannelOpKind::kTake) {
        r.bytes = std::move(c.items.front());
        c.items.pop_front();
      } else if (w.kind == ChannelOpKind::kFetch) {
        r.bytes = c.items.front();
      }
      ready.push_back({std::move(w.done), std::move(r)});
      progressed = true;
    }
    if (!progressed) return;
  }
}

void ChannelTable::op(uint64_t id, ChannelOpKind kind, std::string item,
                      std::optional<Clock::time_point> deadline, Done done) {
  Ready ready;
  {
    std::lock_guard lock(mu_);
    auto it = channels_.find(id);
    if (it == channels_.end()) {
      ready.push_back({std::move(done), failure(ErrorKind::NotFound, "does not exist (released?)", id)});
    } else {
      Channel& c = it->second;
      switch (kind) {
        case ChannelOpKind::kIsReady:
          ready.push_back({std::move(done), ChannelResult{true, c.items.empty() ? std::string(1, '\0') : std::string(1, '\1'), {}}});
          break;
        case ChannelOpKind::kClose: {
          c.closed = true;
          std::string why = "was closed";
          for (auto& w : c.putters) ready.push_back({std::move(w.done), failure(ErrorKind::InvalidArgument, why, id)});
          c.putters.clear();
          // Takers keep waiting only while items remain to serve them.
          if (c.items.empty()) {
            for (auto& w : c.takers) ready.push_back({std::move(w.done), failure(ErrorKind::InvalidArgument, why, id)});
            c.takers.clear();
          }
          ready.push_back({std::move(done), ChannelResult{true, {}, {}}});
          break;
        }
        case ChannelOpKind::kRelease:
          for (auto& w : c.putters) ready.push_back({std::move(w.done), failure(ErrorKind::NotFound, "was released", id)});
          for (auto& w : c.takers) ready.push_back({std::move(w.done), failure(ErrorKind::NotFound, "was released", id)});
          channels_.erase(it);
          ready.push_back({std::move(done), ChannelResult{true, {}, {}}});
          break;
        default: {
          bool is_put = kind == ChannelOpKind::kPut;
          if (c.closed && (is_put || c.items.empty())) {
            ready.push_back({std::move(done), failure(ErrorKind::InvalidArgument, "is closed", id)});
            break;
          }
          Waiter w{next_serial_++, kind, std::move(item), deadline, std::move(done)};
          (is_put ? c.putters : c.takers).push_back(std::move(w));
          serve(c, ready);
          if (deadline && !(is_put ? c.putters : c.takers).empty()) {
            if (!timer_.joinable()) timer_ = std::thread([this] { timer_main(); });
            timer_cv_.notify_all();
          }
        }
      }
    }
  }
  for (auto& [f, r] : ready) f(std::move(r));
}

ChannelResult ChannelTable::op_wait(uint64_t id, ChannelOpKind kind, std::string item,
                                    std::optional<Clock::time_point> deadline) {
  std::mutex m;
  std::condition_variable cv;
  std::optional<ChannelResult> out;
  op(id, kind, std::move(item), deadline, [&](ChannelResult r) {
    std::lock_guard lock(m);
    out = std::move(r);
    cv.notify_all();
  });
  std::unique_lock lock(m);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

void ChannelTable::timer_main() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    auto now = Clock::now();
    std::optional<Clock::time_point> next;
    Ready ready;
    for (auto& [id, c] : channels_) {
      for (auto* queue : {&c.takers, &c.putters}) {
        for (auto it = queue->begin(); it != queue->end();) {
          if (it->deadline && *it->deadline <= now) {
            ready.push_back({std::move(it->done),
                             failure(ErrorKind::Cancelled, "timed out waiting", id)});
            it = queue->erase(it);
          } else {
            if (it->deadline && (!next || *it->deadline < *next)) next = it->deadline;
            ++it;
          }
        }
      }
    }
    if (!ready.empty()) {
      lock.unlock();
      for (auto& [f, r] : ready) f(std::move(r));
      lock.lock();
      continue;
    }
    if (next) timer_cv_.wait_until(lock, *next);
    else timer_cv_.wait(lock);
  }
}

ChannelTable& local_channels() {
  // Lives as long as the process: kernels and the master may use channels until exit.
  static ChannelTable* table = new ChannelTable(myid());
  table->set_owner(myid());
  return *table;
}

}  // namespace dj::detail
