// Which table of mapped segments a SharedArray decoded on this thread attaches to.
#pragma once

#include "shm/segment.hpp"

namespace dj::detail {

// While alive, SharedArrays decoded on this thread (a kernel's arguments) attach to `table`;
// elsewhere on the master they attach to the cluster's table. Nests.
// The calling thread's table (null: the cluster's). Initial-exec: one %fs-relative access.
extern __attribute__((tls_model("initial-exec"))) thread_local SegmentTable* t_segments;
class ScopedSegmentTable {
 public:
  explicit ScopedSegmentTable(SegmentTable* table) noexcept : saved_(t_segments) {
    t_segments = table;
  }
  ~ScopedSegmentTable() { t_segments = saved_; }
  ScopedSegmentTable(const ScopedSegmentTable&) = delete;
  ScopedSegmentTable& operator=(const ScopedSegmentTable&) = delete;

 private:
  SegmentTable* saved_;
};

}  // namespace dj::detail
