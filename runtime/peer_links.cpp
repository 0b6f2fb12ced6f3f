// Worker-to-worker connections: see peer_links.hpp.
#include "peer_links.hpp"

#include <sys/socket.h>

#include <condition_variable>
#include <thread>

#include "channels.hpp"
#include "dj/dj.hpp"
#include "identity.hpp"
#include "sys.hpp"
#include "wire/frame.hpp"

namespace dj::detail {

namespace {
constexpr auto kPeerConnectTimeout = std::chrono::milliseconds(5000);

struct Slot {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // guarded by mu
  StoredValue value;  // guarded by mu
};

void complete(Slot& slot, StoredValue value) {
  std::lock_guard lock(slot.mu);
  slot.value = std::move(value);
  slot.done = true;
  slot.cv.notify_all();
}

StoredValue failure(ErrorKind kind, std::string message, int pid) {
  return StoredValue{false, {}, {kind, std::move(message), pid, {}}};
}

void set_request_id(wire::Message& m, uint64_t id) {
  if (auto* f = std::get_if<wire::Fetch>(&m)) f->request_id = id;
  else if (auto* c = std::get_if<wire::ChannelOp>(&m)) c->request_id = id;
  else throw Error(ErrorKind::Internal, "peer request must be a Fetch or a ChannelOp");
}
}  // namespace

struct PeerLinks::Conn {
  int pid = 0;
  Fd fd;
  std::shared_ptr<wire::RingLink> ring;  // same host: every frame goes through it
  std::mutex write_mu;
  std::mutex mu;
  uint64_t next_id = 1;                                         // guarded by mu
  std::unordered_map<uint64_t, std::shared_ptr<Slot>> slots;    // guarded by mu
  bool lost = false;                                            // guarded by mu
  std::string why;                                              // guarded by mu
};

void PeerLinks::add(const std::vector<wire::Peer>& entries) {
  std::lock_guard lock(mu_);
  for (const auto& e : entries) {
    if (e.pid != self_) directory_[e.pid] = e;
  }
}

bool PeerLinks::reachable(int pid) const {
  std::lock_guard lock(mu_);
  return directory_.count(pid) != 0;
}

uint64_t PeerLinks::payload_bytes_received() const {
  std::lock_guard lock(mu_);
  return received_;
}

std::shared_ptr<PeerLinks::Conn> PeerLinks::connect(int pid) {
  std::lock_guard serial(connect_mu_);
  wire::Peer where;
  {
    std::lock_guard lock(mu_);
    if (auto it = conns_.find(pid); it != conns_.end()) return it->second;
    auto it = directory_.find(pid);
    if (it == directory_.end()) {
      throw Error(ErrorKind::NotFound, "worker " + std::to_string(pid) + " is not a known peer");
    }
    where = it->second;
  }
  Fd fd;
  const bool same_host = !where.unix_name.empty() && where.host_identity == host_identity();
  if (same_host) {
    fd = connect_unix_abstract(where.unix_name, kPeerConnectTimeout);
  } else {
    auto [host, port] = split_host_port(where.address);
    fd = connect_tcp(host, port, kPeerConnectTimeout);
  }
  wire::write_frame(fd.get(), wire::Hello{cookie_, pid, self_, wire::kProtocolVersion});
  set_receive_timeout(fd.get(), kPeerConnectTimeout);
  auto frame = wire::read_frame(fd.get());
  const auto* welcome = frame ? std::get_if<wire::Welcome>(&frame->message) : nullptr;
  if (!welcome || welcome->pid != pid) {
    throw Error(ErrorKind::Disconnected,
                "worker " + std::to_string(pid) + " refused the peer handshake");
  }
  auto conn = std::make_shared<Conn>();
  if (same_host && wire::rings_enabled()) {
    std::string refused;
    conn->ring = wire::offer_ring(fd.get(), refused);
    if (!conn->ring) {
      log_line("worker " + std::to_string(pid) + " refused shared memory for our connection (" +
               refused + "); using its socket");
    }
  }
  set_receive_timeout(fd.get(), std::chrono::milliseconds(0));
  conn->pid = pid;
  conn->fd = std::move(fd);
  {
    std::lock_guard lock(mu_);
    conns_[pid] = conn;
  }
  std::thread([conn, this] { read_loop(conn, this); }).detach();
  return conn;
}

void PeerLinks::forget(const Conn& conn) {
  std::lock_guard lock(mu_);
  auto it = conns_.find(conn.pid);
  if (it != conns_.end() && it->second.get() == &conn) conns_.erase(it);
}

void PeerLinks::read_loop(const std::shared_ptr<Conn>& conn, PeerLinks* owner) {
  std::string why;
  try {
    wire::FrameReader reader(conn->fd.get());
    if (conn->ring) reader.use_ring(conn->ring);
    for (;;) {
      auto frame = reader.next();
      if (!frame) {
        why = "closed the connection";
        break;
      }
      auto* result = std::get_if<wire::Result>(&frame->message);
      if (!result) {
        why = std::string("sent an unexpected ") + wire::message_name(frame->message);
        break;
      }
      {
        std::lock_guard lock(owner->mu_);
        owner->received_ += frame->payload.size();
      }
      std::shared_ptr<Slot> slot;
      {
        std::lock_guard lock(conn->mu);
        auto it = conn->slots.find(result->request_id);
        if (it == conn->slots.end()) continue;
        slot = it->second;
        conn->slots.erase(it);
      }
      complete(*slot, StoredValue{result->ok, std::move(frame->payload), result->error});
    }
  } catch (const Error& e) {
    why = e.what();
  }
  // Lost: forget the connection (a later request reconnects, or finds the peer gone) and fail
  // every request still waiting on it.
  owner->forget(*conn);
  ::shutdown(conn->fd.get(), SHUT_RDWR);
  std::unordered_map<uint64_t, std::shared_ptr<Slot>> slots;
  {
    std::lock_guard lock(conn->mu);
    conn->lost = true;
    conn->why = why;
    slots.swap(conn->slots);
  }
  for (auto& [id, slot] : slots) {
    complete(*slot, failure(ErrorKind::Disconnected,
                            "connection to worker " + std::to_string(conn->pid) + " lost (" +
                                why + ")",
                            conn->pid));
  }
}

StoredValue PeerLinks::request(int pid, wire::Message message, const std::string& payload) {
  std::shared_ptr<Conn> conn;
  try {
    conn = connect(pid);
  } catch (const Error& e) {
    return failure(e.kind() == ErrorKind::NotFound ? ErrorKind::NotFound : ErrorKind::Disconnected,
                   "worker " + std::to_string(self_) + " cannot reach worker " +
                       std::to_string(pid) + ": " + e.what(),
                   pid);
  }
  auto slot = std::make_shared<Slot>();
  {
    std::lock_guard lock(conn->mu);
    if (conn->lost) {
      return failure(ErrorKind::Disconnected,
                     "connection to worker " + std::to_string(pid) + " lost (" + conn->why + ")",
                     pid);
    }
    uint64_t id = conn->next_id++;
    set_request_id(message, id);
    conn->slots[id] = slot;
  }
  try {
    std::lock_guard lock(conn->write_mu);
    wire::write_frame(wire::Outlet(conn->fd.get(), conn->ring.get()), message, payload);
  } catch (const Error&) {
    // The reader sees the connection end too and fails the slot.
  }
  std::unique_lock lock(slot->mu);
  slot->cv.wait(lock, [&] { return slot->done; });
  return std::move(slot->value);
}

void serve_peer(Fd fd, int peer_pid, ValueStore& store) {
  struct Link {
    Fd fd;
    std::mutex write_mu;
    std::shared_ptr<wire::RingLink> ring;  // guarded by write_mu: set by the peer's RingOffer
    void answer(const wire::Result& r, const std::string& bytes) {
      std::lock_guard lock(write_mu);
      try {
        wire::write_frame(wire::Outlet(fd.get(), ring.get()), r, r.ok ? bytes : std::string());
      } catch (const Error&) {
        // The peer is gone; its reader fails its own requests.
      }
    }
  };
  auto link = std::make_shared<Link>();
  link->fd = std::move(fd);
  std::thread([link, peer_pid, &store] {
    std::string who = "peer worker " + std::to_string(peer_pid);
    try {
      wire::FrameReader reader(link->fd.get());
      reader.keep_descriptors();  // a same-host peer's RingOffer brings them
      while (auto frame = reader.next()) {
        if (auto* offer = std::get_if<wire::RingOffer>(&frame->message)) {
          std::lock_guard lock(link->write_mu);
          link->ring = wire::accept_ring(reader, link->fd.get(), *offer);
        } else if (auto* f = std::get_if<wire::Fetch>(&frame->message)) {
          uint64_t req = f->request_id;
          bool known = store.get_or_wait(f->ref_id, [link, req](const ValuePtr& v) {
            link->answer(wire::Result{req, v->ok, v->error}, v->bytes);
          });
          if (!known) {
            link->answer(wire::Result{req, false,
                                      {ErrorKind::NotFound,
                                       "worker " + std::to_string(myid()) + " holds no value " +
                                           std::to_string(f->ref_id) + " (already released?)",
                                       myid(), {}}},
                         {});
          }
        } else if (auto* op = std::get_if<wire::ChannelOp>(&frame->message)) {
          serve_channel_op(*op, std::move(frame->payload),
                           [link](wire::Result r, std::string b) { link->answer(r, b); });
        } else {
          log_line("dropped connection from " + who + ": unexpected " +
                   wire::message_name(frame->message));
          break;
        }
      }
    } catch (const Error& e) {
      log_line("dropped connection from " + who + ": " + e.what());
    }
    ::shutdown(link->fd.get(), SHUT_RDWR);
  }).detach();
}

}  // namespace dj::detail
