// libFuzzer target: the frame reader (runtime/wire/frame.cpp) on arbitrary bytes, as a peer
// could send them on a dj connection: prefix validation, header decoding, payloads that end
// early. The bytes are served from a memfd, so FrameReader and read_frame do their real
// read() calls; parse_frame reads the same bytes from memory.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "wire/frame.hpp"

namespace {

// Small enough that a claimed payload is cheap to reserve; the prefix check is the same code
// whatever the limit.
constexpr uint64_t kMaxPayload = uint64_t{1} << 20;

int input_fd() {
  static int fd = [] {
    int f = ::memfd_create("dj-fuzz-frames", MFD_CLOEXEC);
    if (f < 0) std::abort();
    return f;
  }();
  return fd;
}

void serve(const uint8_t* data, size_t size) {
  int fd = input_fd();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size) ||
      ::lseek(fd, 0, SEEK_SET) != 0) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dj::wire;
  serve(data, size);
  try {
    FrameReader reader(input_fd(), kMaxPayload);
    // Every frame the bytes hold, as the serve loop reads them.
    for (int frames = 0; frames < 64; ++frames) {
      bool buffered = reader.has_buffered_frame();
      auto frame = reader.next();
      if (!frame) break;
      (void)buffered;
      (void)message_name(frame->message);
    }
  } catch (const dj::Error&) {
  }

  serve(data, size);
  try {
    while (read_frame(input_fd(), kMaxPayload)) {
    }
  } catch (const dj::Error&) {
  }

  try {
    Frame f = parse_frame(std::string(reinterpret_cast<const char*>(data), size));
    // A frame that parsed is whole: its payload is exactly what the prefix announced.
    if (f.payload.size() > size) std::abort();
  } catch (const dj::Error&) {
  }
  return 0;
}
