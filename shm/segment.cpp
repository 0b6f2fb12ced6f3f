// Segments on Boost.Interprocess (the only file that includes it, per the style guide), the free
// space check, and the per-process table of mapped segments.
#include "shm/segment.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstring>

#include "dj/error.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace bip = boost::interprocess;

namespace {

std::string gib(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return buf;
}

// Boost reports errno-based failures as interprocess_exception with native_error().
[[noreturn]] void rethrow(const bip::interprocess_exception& e, const char* call,
                          const std::string& name) {
  int err = e.get_native_error();
  if (err == ENOENT) {
    throw Error(ErrorKind::NotFound, std::string(call) + "(" + name + "): no such segment");
  }
  if (err == EEXIST) {  // Planted by someone else: never reused (it would not be ours alone).
    throw Error(ErrorKind::ResourceExhausted,
                std::string(call) + "(" + name + "): a segment or file of that name already " +
                    "exists (not created by this master); refused rather than reused");
  }
  if (err == ENOSPC || err == ENOMEM) {
    throw Error(ErrorKind::ResourceExhausted,
                std::string(call) + "(" + name + "): " + std::strerror(err));
  }
  throw Error(ErrorKind::Internal, std::string(call) + "(" + name + "): " + e.what());
}

}  // namespace

struct Segment::Impl {
  std::string name;
  size_t bytes = 0;
  bool is_linked = false;  // this process created the name and has not unlinked it
  bip::mapped_region region;
};

Segment::Segment(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Segment::~Segment() { unlink(); }

size_t shm_bytes_free() {
  struct statvfs st {};
  sys_check("statvfs", "/dev/shm", [&] { return ::statvfs("/dev/shm", &st); });
  return static_cast<size_t>(st.f_bavail) * static_cast<size_t>(st.f_frsize);
}

std::unique_ptr<Segment> Segment::create(const std::string& name, size_t bytes,
                                         const std::string& what) {
  size_t free_bytes = shm_bytes_free();
  if (bytes > free_bytes) {
    throw Error(ErrorKind::ResourceExhausted,
                what + " needs " + std::to_string(bytes) + " bytes (" + gib(bytes) +
                    ") of shared memory but /dev/shm has " + std::to_string(free_bytes) +
                    " bytes (" + gib(free_bytes) + ") free");
  }
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->bytes = bytes;
  // A mapping cannot be empty: a zero-element array still gets one page.
  size_t map_bytes = bytes == 0 ? 1 : bytes;
  try {
    bip::permissions owner_only(0600);
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, owner_only);
    impl->is_linked = true;
    auto guard = std::unique_ptr<Segment>(new Segment(std::move(impl)));  // unlinks on throw
    shm.truncate(static_cast<bip::offset_t>(map_bytes));
    // Reserve the pages now: tmpfs would otherwise hand out pages on first touch and SIGBUS a
    // writer when /dev/shm fills up (Julia's SharedArray crash, julia#29292).
    int fd = shm.get_mapping_handle().handle;
    int rc;
    do rc = ::posix_fallocate(fd, 0, static_cast<off_t>(map_bytes));
    while (rc == EINTR);
    if (rc != 0) {
      throw Error(rc == ENOSPC ? ErrorKind::ResourceExhausted : ErrorKind::Internal,
                  what + ": reserving " + std::to_string(bytes) + " bytes in /dev/shm for " +
                      name + " failed: " + std::strerror(rc));
    }
    guard->impl_->region = bip::mapped_region(shm, bip::read_write, 0, map_bytes);
    return guard;
  } catch (const bip::interprocess_exception& e) {
    rethrow(e, "shm create", name);
  }
}

std::unique_ptr<Segment> Segment::open(const std::string& name, size_t bytes) {
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->bytes = bytes;
  size_t map_bytes = bytes == 0 ? 1 : bytes;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    bip::offset_t size = 0;
    if (!shm.get_size(size) || static_cast<size_t>(size) != map_bytes) {
      throw Error(ErrorKind::InvalidArgument,
                  "shm segment " + name + " is " + std::to_string(size) + " bytes, expected " +
                      std::to_string(map_bytes));
    }
    impl->region = bip::mapped_region(shm, bip::read_write, 0, map_bytes);
  } catch (const bip::interprocess_exception& e) {
    rethrow(e, "shm open", name);
  }
  return std::unique_ptr<Segment>(new Segment(std::move(impl)));
}

void Segment::unlink() noexcept {
  if (!impl_ || !impl_->is_linked) return;
  impl_->is_linked = false;
  if (!bip::shared_memory_object::remove(impl_->name.c_str())) {
    log_line("could not unlink shared memory segment " + impl_->name);
  }
}

void* Segment::data() const noexcept { return impl_->region.get_address(); }
size_t Segment::bytes() const noexcept { return impl_->bytes; }
const std::string& Segment::name() const noexcept { return impl_->name; }

void SegmentTable::hold(const std::string& name, std::shared_ptr<Segment> segment) {
  std::lock_guard lock(mu_);
  entries_[name] = Entry{std::move(segment), {}};
}

void SegmentTable::watch(const std::string& name, const std::weak_ptr<Segment>& segment) {
  std::lock_guard lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {  // forget freed ones
    it = !it->second.held && it->second.watched.expired() ? entries_.erase(it) : std::next(it);
  }
  entries_[name] = Entry{nullptr, segment};
}

std::shared_ptr<Segment> SegmentTable::find(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  return it->second.held ? it->second.held : it->second.watched.lock();
}

void SegmentTable::drop(const std::string& name) {
  std::shared_ptr<Segment> last;  // unmapped after the lock is released
  std::lock_guard lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  last = std::move(it->second.held);
  entries_.erase(it);
}

size_t SegmentTable::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace dj::detail
