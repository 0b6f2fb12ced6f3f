// Direct worker-to-worker connections, Distributed.jl's all-to-all topology connected lazily:
// a worker whose kernel needs a value or a channel owned by another worker connects to that
// worker the first time (authenticated with the cluster cookie, like the master's connection)
// and keeps the connection for later requests. The master tells each worker where the others
// listen (wire::Peers); a worker missing from that list is reached through the master.
//
// Both directions live here: PeerLinks is the requesting side (one connection per peer, a
// reader thread per connection completing requests), serve_peer the answering side (a thread
// per accepted peer answering Fetch and ChannelOp).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "net.hpp"
#include "value_store.hpp"
#include "wire/codec.hpp"

namespace dj::detail {

class PeerLinks {
 public:
  explicit PeerLinks(std::string cookie) : cookie_(std::move(cookie)) {}

  void set_self(int pid) { self_ = pid; }
  // Records where peers listen (from the master's Peers message).
  void add(const std::vector<wire::Peer>& entries);
  // Whether `pid` can be reached directly (the master listed it).
  bool reachable(int pid) const;

  // Sends `request` (a Fetch or ChannelOp; its request id is filled in) with `payload` to worker
  // `pid`, connecting first if needed, and waits for the Result. Never throws: a peer that
  // cannot be reached or is lost meanwhile gives an error value (Disconnected naming the peer).
  StoredValue request(int pid, wire::Message request, const std::string& payload = {});

  // Bytes of Result payload received from peers (diagnostics and tests).
  uint64_t payload_bytes_received() const;

 private:
  struct Conn;
  std::shared_ptr<Conn> connect(int pid);
  static void read_loop(const std::shared_ptr<Conn>& conn, PeerLinks* owner);
  void forget(const Conn& conn);

  const std::string cookie_;
  int self_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<int, wire::Peer> directory_;             // guarded by mu_
  std::unordered_map<int, std::shared_ptr<Conn>> conns_;      // guarded by mu_
  std::mutex connect_mu_;  // one connection attempt at a time (no duplicate connections)
  uint64_t received_ = 0;  // guarded by mu_
};

// Answers one accepted peer connection (already authenticated) on a thread of its own until the
// peer closes it: Fetch from `store`, ChannelOp from this process's channels. Anything else is
// a protocol violation: logged, and the connection is closed.
void serve_peer(Fd fd, int peer_pid, ValueStore& store);

}  // namespace dj::detail
