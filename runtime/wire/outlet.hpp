// Where a connection's frames are written: its socket, or, on a same-host connection after
// RingOffer, the shared-memory ring beside it (wire/ring.hpp).
#pragma once

namespace dj::wire {

class RingLink;

struct Outlet {
  Outlet(int socket_fd) : fd(socket_fd) {}  // NOLINT(google-explicit-constructor): a socket is one
  Outlet(int socket_fd, RingLink* shared_ring) : fd(socket_fd), ring(shared_ring) {}
  int fd;
  RingLink* ring = nullptr;
};

}  // namespace dj::wire
