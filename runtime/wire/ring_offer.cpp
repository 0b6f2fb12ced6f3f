// Setting up shared-memory rings on a fresh same-host connection (RingOffer / RingReady), for
// the master's connections to its workers and for workers' connections to each other.
#include <cstdlib>
#include <string>

#include "wire/frame.hpp"

namespace dj::wire {

bool rings_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DJ_RING");
    return !(v && std::string(v) == "0");
  }();
  return enabled;
}

std::shared_ptr<RingLink> offer_ring(int sock, std::string& refused) {
  auto ring = RingLink::create(sock);
  auto fds = ring->offer_fds();
  write_frame_with_fds(sock, RingOffer{ring->ring_bytes()}, {fds[0], fds[1], fds[2]});
  auto frame = read_frame(sock);
  const auto* ready = frame ? std::get_if<RingReady>(&frame->message) : nullptr;
  if (!ready) {
    throw Error(ErrorKind::Disconnected,
                frame ? std::string("answered the shared-memory ring offer with ") +
                            message_name(frame->message)
                      : std::string("closed the connection instead of answering the ring offer"));
  }
  if (!ready->ok) {
    refused = ready->error;
    return nullptr;
  }
  return ring;
}

std::shared_ptr<RingLink> accept_ring(FrameReader& reader, int sock, const RingOffer& offer) {
  RingReady answer{false, {}};
  std::shared_ptr<RingLink> ring;
  try {
    if (reader.ring()) {
      throw Error(ErrorKind::InvalidArgument, "the connection already uses a ring");
    }
    auto fds = reader.take_fds(3);
    ring = RingLink::attach(sock, fds[0], fds[1], fds[2], offer.ring_bytes);
    answer.ok = true;
  } catch (const Error& e) {
    answer.error = e.what();
  }
  write_frame(sock, answer);  // Throws Disconnected when the peer is gone.
  if (ring) reader.use_ring(ring);
  return ring;
}

}  // namespace dj::wire
