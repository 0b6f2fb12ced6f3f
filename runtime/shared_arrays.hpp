// Which table of mapped segments a SharedArray decoded on this thread attaches to.
#pragma once

#include "shm/segment.hpp"

namespace dj::detail {

// While alive, SharedArrays decoded on this thread (a kernel's arguments) attach to `table`;
// elsewhere on the master they attach to the cluster's table. Nests.
class ScopedSegmentTable {
 public:
  explicit ScopedSegmentTable(SegmentTable* table) noexcept;
  ~ScopedSegmentTable();
  ScopedSegmentTable(const ScopedSegmentTable&) = delete;
  ScopedSegmentTable& operator=(const ScopedSegmentTable&) = delete;

 private:
  SegmentTable* saved_;
};

}  // namespace dj::detail
