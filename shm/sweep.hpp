// Removing SharedArray segments that dead masters left in /dev/shm. Plain POSIX, so that dj-run
// (which does not link libdj) can sweep too.
#pragma once

#include <string>
#include <vector>

namespace dj::detail {

// Unlinks every /dev/shm/dj-<pid>-<n> whose master pid is not a live process, and returns the
// names removed. A name that only looks alike (dj-x-1, dj-12) is left alone, and so is a live
// master's. Never throws: a failure to remove one logs nothing and is skipped (another
// process's segment cannot be removed anyway). `own_pid`'s segments count as stale too: a master
// sweeping before it creates any is looking at a dead master's that had the same OS pid.
std::vector<std::string> sweep_stale_segments(const std::string& dir = "/dev/shm",
                                              long own_pid = 0);

}  // namespace dj::detail
