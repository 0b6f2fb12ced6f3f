// One mapping of a shared-memory segment in this process (Boost.Interprocess behind a pimpl),
// and the per-process table of the SharedArray segments a worker keeps mapped.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace dj::detail {

// A mapped segment. Non-copyable; the destructor unmaps, and unlinks the name if this process
// created it and has not unlinked it yet (so a failed creation leaves nothing in /dev/shm).
class Segment {
 public:
  // Creates `name` exclusively with mode 0600, `bytes` long, with its pages reserved in
  // /dev/shm (a later write can never SIGBUS), and maps it. `what` describes the array for
  // messages. Throws: ResourceExhausted when /dev/shm has less than `bytes` free (the message
  // names both sizes), Internal for other failures (naming the call and the segment).
  static std::unique_ptr<Segment> create(const std::string& name, size_t bytes,
                                         const std::string& what);
  // Maps the existing segment `name`, which must be `bytes` long. Throws: NotFound (no such
  // segment), InvalidArgument (another size), Internal.
  static std::unique_ptr<Segment> open(const std::string& name, size_t bytes);
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Removes the name from /dev/shm (the mappings stay valid). Never throws; logs a failure.
  void unlink() noexcept;
  void* data() const noexcept;
  size_t bytes() const noexcept;
  const std::string& name() const noexcept;

 private:
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Bytes free in /dev/shm for an unprivileged writer (statvfs). Throws Internal on failure.
size_t shm_bytes_free();

// The SharedArray segments this process has mapped, by name. A worker holds each mapping until
// the master sends UnmapShared; the master only watches its own (its handles own them).
// Thread-safety: every method may be called from any thread.
class SegmentTable {
 public:
  // Keeps `segment` mapped until drop(name).
  void hold(const std::string& name, std::shared_ptr<Segment> segment);
  // Records `segment` without keeping it alive.
  void watch(const std::string& name, const std::weak_ptr<Segment>& segment);
  // The mapping, or null when not mapped here (or already freed).
  std::shared_ptr<Segment> find(const std::string& name) const;
  // Forgets `name`; the memory goes when the last handle using it does. Unknown names: no-op.
  void drop(const std::string& name);
  size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<Segment> held;
    std::weak_ptr<Segment> watched;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // guarded by mu_
};

}  // namespace dj::detail
