// Who this process is: its dj pid (myid), and facts about its host that tell whether two
// processes share memory (host name alone cannot: SSH test hosts share a kernel).
#pragma once

#include <string>

namespace dj::detail {

void set_myid(int pid);
std::string host_name();
// Boot id of the kernel plus the device of /dev/shm: equal only for processes that can map
// the same shared-memory segments.
std::string host_identity();
// Resident set size of this process in bytes (0 if unknown).
unsigned long long rss_bytes();
// Random bytes from the kernel's CSPRNG. Throws on failure.
std::string random_bytes(size_t n);

}  // namespace dj::detail
