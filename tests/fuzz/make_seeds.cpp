// Writes the fuzzers' seed corpus: real encodings made by dj's own encoders (wire::encode,
// write_frame, the master's ArgBlob, dj::ser) of every message type, representative argument
// lists, a pmap batch and its results, and ELF images. Deterministic: the committed seeds in
// tests/fuzz/seeds are this program's output, and a test checks that they still are.
//
// usage: make_seeds OUTPUT_DIR   (writes OUTPUT_DIR/<target>/<name>)
#include <elf.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "dj/dj.hpp"
#include "fuzz_types.hpp"
#include "wire/frame.hpp"

using namespace dj;

namespace {

std::string out_dir;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  std::string dir = out_dir + "/" + target;
  ::mkdir(out_dir.c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

// The bytes `write(fd)` puts on a connection.
template <class Write>
std::string written_bytes(Write&& write) {
  int fd = ::memfd_create("dj-seed", MFD_CLOEXEC);
  write(fd);
  std::string out(static_cast<size_t>(::lseek(fd, 0, SEEK_CUR)), '\0');
  if (::pread(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size())) out.clear();
  ::close(fd);
  return out;
}

// The bytes write_frame puts on a connection.
std::string frame_bytes(const wire::Message& m, const std::string& payload = {}) {
  return written_bytes([&](int fd) { wire::write_frame(fd, m, payload); });
}

// A string literal's bytes, NULs included.
template <size_t N>
std::string bytes_of(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

template <class T>
std::string pod(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

// A reference argument as ArgBlob::add_ref writes it (arg_blob.hpp), appended to a blob.
std::string with_ref(std::string blob, int32_t owner, uint64_t ref) {
  uint32_t count;
  std::memcpy(&count, blob.data(), 4);
  ++count;
  std::memcpy(blob.data(), &count, 4);
  return blob + '\1' + pod(owner) + pod(ref);
}

std::vector<std::pair<std::string, wire::Message>> messages() {
  wire::RemoteError err{ErrorKind::RemoteFailure, "on worker 2: kernel 'f' threw: boom", 2, "f"};
  return {
      {"hello", wire::Hello{std::string(64, 'c'), 2, 1, wire::kProtocolVersion}},
      {"welcome", wire::Welcome{2, 4242, "node1", "0123456789abcdef"}},
      {"load_plugin", wire::LoadPlugin{7, "libk.so", std::string(32, '\x5a')}},
      {"plugin_loaded", wire::PluginLoaded{7, false, err, 0, false}},
      {"call", wire::Call{9, 10, detail::kernel_id("add"), "add", "(f64,f64)->f64",
                          wire::CallMode::kStore, 0}},
      {"call_batch", wire::Call{9, 0, detail::kernel_id("sq"), "sq", "(f64)->f64",
                                wire::CallMode::kBatch, 3}},
      {"call_done", wire::CallDone{10, false, err}},
      {"result", wire::Result{9, true, {}}},
      {"fetch", wire::Fetch{11, 10}},
      {"fetch_ref", wire::FetchRef{12, 3, 10}},
      {"release", wire::Release{10}},
      {"stats_request", wire::StatsRequest{13}},
      {"stats_reply", wire::StatsReply{13, 2, 1024, 1 << 20, 1}},
      {"shutdown", wire::Shutdown{"rmprocs"}},
      {"refused", wire::Refused{err}},
      {"interrupt", wire::Interrupt{}},
      {"channel_op", wire::ChannelOp{14, 2, 5, wire::ChannelOpKind::kPut, 100, 16}},
      {"map_shared", wire::MapShared{15, "/dj-100-1", 4096}},
      {"shared_mapped", wire::SharedMapped{15, true, {}}},
      {"unmap_shared", wire::UnmapShared{"/dj-100-1"}},
      {"store_value", wire::StoreValue{16}},
  };
}

template <class T>
std::string one_arg(const T& v) {
  detail::ArgBlob blob;
  blob.add_value(v);
  return blob.bytes;
}

void argument_seeds() {
  using namespace dj::fuzz;
  fuzz::Particle p{1.5, -2.0, 7, "alpha", {{true, 3}, {false, -4}}};
  Mat m(2, 3);
  for (size_t j = 0; j < 3; ++j)
    for (size_t i = 0; i < 2; ++i) m(i, j) = static_cast<double>(i + 10 * j);
  std::vector<std::pair<std::string, std::string>> values = {
      {"str", one_arg(Str("hello, worker"))},
      {"doubles", one_arg(Doubles{1.0, 2.5, -3.25})},
      {"nested", one_arg(Nested{{1, 2}, {}, {3}})},
      {"tuple", one_arg(Tuple{42, "t", {0.5f}, {1, 2, 3}})},
      {"matrix", one_arg(m)},
      {"particles", one_arg(Particles{p, p})},
  };
  for (const auto& [name, blob] : values) seed("call_args", "args_" + name, blob);
  detail::ArgBlob two;
  two.add_value(3.0);
  two.add_value(Str("x"));
  seed("call_args", "args_two_and_ref", with_ref(two.bytes, 3, 99));
  seed("call_args", "value_doubles", ser::to_bytes(Doubles{0.25, 4.0}));
  seed("call_args", "value_particle", ser::to_bytes(Particles{p}));

  // A pmap batch of three elements, as pmap sends it (u64 length + argument list each).
  std::string batch;
  for (double x : {1.0, 2.0, 3.0}) {
    std::string element = one_arg(x);
    batch += pod<uint64_t>(element.size()) + element;
  }
  seed("call_args", "batch", batch);
  // Its results, as execute_batch answers (one ok, one error), after the count byte.
  std::string results = std::string(1, '\2') + '\1' + pod<uint64_t>(8) + ser::to_bytes(1.0) +
                        char(2 + static_cast<int>(ErrorKind::RemoteFailure)) +
                        pod<uint64_t>(4) + "boom";
  seed("call_args", "batch_results", results);
}

// A small ELF shared-object image: header, a PT_LOAD and a PT_DYNAMIC inside the image.
std::string elf_image(bool truncated) {
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_DYN;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = sizeof eh;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 2;
  Elf64_Phdr load{}, dyn{};
  load.p_type = PT_LOAD;
  load.p_offset = 0;
  load.p_filesz = truncated ? 4096 : 256;
  load.p_memsz = 4096;
  dyn.p_type = PT_DYNAMIC;
  dyn.p_offset = 192;
  dyn.p_filesz = 64;
  std::string out(reinterpret_cast<const char*>(&eh), sizeof eh);
  out += std::string(reinterpret_cast<const char*>(&load), sizeof load);
  out += std::string(reinterpret_cast<const char*>(&dyn), sizeof dyn);
  out.resize(256, '\0');
  return out;
}

void plugin_seeds() {
  seed("plugin_image", "elf_small", elf_image(false));
  seed("plugin_image", "elf_truncated", elf_image(true));
  // Descriptor layouts (fuzz_plugin_image.cpp): ABI 1, two complete kernels / a collision.
  seed("plugin_image", "descriptor_ok",
       bytes_of("\1\2\0\0add\0(f64,f64)->f64\0scale\0(vec<f64>,f64)->vec<f64>"));
  seed("plugin_image", "descriptor_twice", bytes_of("\1\2\0\0f\0(f64)->f64\0f\0(f64)->f64"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUTPUT_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  for (const auto& [name, m] : messages()) {
    seed("message_decode", name, wire::encode(m));
    seed("frame_reader", name, frame_bytes(m));
  }
  std::string args;
  {
    detail::ArgBlob blob;
    blob.add_value(1.0);
    blob.add_value(2.0);
    args = blob.bytes;
  }
  seed("frame_reader", "call_with_args",
       frame_bytes(wire::Call{1, 2, detail::kernel_id("add"), "add", "(f64,f64)->f64",
                              wire::CallMode::kFetch, 0},
                   args));
  seed("frame_reader", "compact_call", written_bytes([&](int fd) {
         wire::write_compact_call(fd, 1, detail::kernel_id("add"), detail::fnv1a64("(f64,f64)->f64"),
                                  args.data(), args.size());
       }));
  seed("frame_reader", "compact_result", written_bytes([](int fd) {
         wire::write_compact_result(fd, 1, wire::CompactStatus::kOk, "\1\2\3\4\5\6\7\10", 8);
       }));
  seed("frame_reader", "compact_resend", written_bytes([](int fd) {
         wire::write_compact_result(fd, 2, wire::CompactStatus::kResendInFull);
       }));
  seed("frame_reader", "two_frames",
       frame_bytes(wire::Fetch{1, 2}) + frame_bytes(wire::Result{1, true, {}}, "\1\2\3"));
  argument_seeds();
  plugin_seeds();
  return 0;
}
