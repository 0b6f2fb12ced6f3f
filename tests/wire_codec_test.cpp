// The wire: every message survives encode/decode, and bad bytes are refused with a clear error.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "wire/codec.hpp"
#include "wire/frame.hpp"

using namespace dj;
using namespace dj::wire;

TEST_CASE("every message type survives encode and decode", "[wire]") {
  Call call{7, 9, 0x1234567890abcdefull, "add", "(f64,f64)->f64", CallMode::kFetch};
  auto back = std::get<Call>(decode(encode(call)));
  CHECK(back.request_id == 7);
  CHECK(back.ref_id == 9);
  CHECK(back.kernel_id == 0x1234567890abcdefull);
  CHECK(back.kernel_name == "add");
  CHECK(back.signature == "(f64,f64)->f64");
  CHECK(back.mode == CallMode::kFetch);

  Result failed{3, false, {ErrorKind::RemoteFailure, "on worker 2: boom", 2, "fail"}};
  auto r = std::get<Result>(decode(encode(failed)));
  CHECK_FALSE(r.ok);
  CHECK(r.error.kind == ErrorKind::RemoteFailure);
  CHECK(r.error.message == "on worker 2: boom");
  CHECK(r.error.worker == 2);
  CHECK(r.error.kernel == "fail");

  Hello hello{std::string("\0secret\xff", 8), 5, 1, kProtocolVersion};
  auto h = std::get<Hello>(decode(encode(hello)));
  CHECK(h.cookie == hello.cookie);
  CHECK(h.pid == 5);

  std::vector<Message> all{Welcome{2, 42, "host", "boot"}, LoadPlugin{1, "a.so", "digest"},
                           PluginLoaded{1, true, {}, 3, true}, CallDone{4, true, {}},
                           Fetch{5, 6}, FetchRef{7, 3, 8}, Release{9}, StatsRequest{10},
                           StatsReply{11, 1, 2, 3, 4}, Shutdown{"bye"},
                           Refused{{ErrorKind::InvalidArgument, "old", 0, ""}},
                           UnmapShared{"/dj-1-0"}};
  for (const auto& m : all) {
    CHECK(decode(encode(m)).index() == m.index());
  }

  auto map = std::get<MapShared>(decode(encode(MapShared{12, "/dj-42-3", 4096})));
  CHECK(map.request_id == 12);
  CHECK(map.name == "/dj-42-3");
  CHECK(map.bytes == 4096);
  auto mapped = std::get<SharedMapped>(
      decode(encode(SharedMapped{13, false, {ErrorKind::NotFound, "no segment", 3, ""}})));
  CHECK(mapped.request_id == 13);
  CHECK_FALSE(mapped.ok);
  CHECK(mapped.error.kind == ErrorKind::NotFound);
  CHECK(mapped.error.message == "no segment");

  Call chunk{0, 11, 0, "(built-in)", "(f64)", CallMode::kStore, 0, ChunkOp::kSlice};
  CHECK(std::get<Call>(decode(encode(chunk))).chunk_op == ChunkOp::kSlice);
  Peers peers{{{2, "127.0.0.1:4000", "dj-worker-7-1", "boot/1"}, {3, "10.0.0.2:5000", "", "b"}}};
  auto p = std::get<Peers>(decode(encode(peers)));
  REQUIRE(p.entries.size() == 2);
  CHECK(p.entries[0].pid == 2);
  CHECK(p.entries[0].address == "127.0.0.1:4000");
  CHECK(p.entries[0].unix_name == "dj-worker-7-1");
  CHECK(p.entries[1].host_identity == "b");
}

TEST_CASE("a Peers message listing more workers than one message may is refused", "[wire][errors]") {
  Peers many;
  many.entries.resize(kMaxPeersPerMessage + 1, Peer{2, "127.0.0.1:1", "", ""});
  REQUIRE_THROWS_WITH(decode(encode(many)), Catch::Contains("more than 1024"));
  many.entries.pop_back();
  CHECK(std::get<Peers>(decode(encode(many))).entries.size() == kMaxPeersPerMessage);
}

TEST_CASE("decoding random or truncated bytes throws InvalidArgument, never crashes", "[wire][errors]") {
  std::string good = encode(Call{1, 2, 3, "k", "()->void", CallMode::kStore});
  for (size_t cut = 0; cut < good.size(); cut += 8) {
    std::string truncated = good.substr(0, cut);
    try {
      decode(truncated);
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::InvalidArgument);
    }
  }
  REQUIRE_THROWS_WITH(decode("abc"), Catch::Contains("not a whole number of 8-byte words"));
  std::string junk(64, '\xff');
  REQUIRE_THROWS_AS(decode(junk), Error);
}

TEST_CASE("a frame with a bad magic or an oversized payload is refused before allocation", "[wire][errors]") {
  unsigned char prefix[kFramePrefixBytes] = {};
  std::memcpy(prefix, "GET ", 4);
  REQUIRE_THROWS_WITH(parse_prefix(prefix, 1024), Catch::Contains("bad frame magic"));

  uint32_t magic = kFrameMagic, header = 16;
  uint64_t payload = uint64_t{4} << 30;
  std::memcpy(prefix, &magic, 4);
  std::memcpy(prefix + 4, &header, 4);
  std::memcpy(prefix + 8, &payload, 8);
  REQUIRE_THROWS_WITH(parse_prefix(prefix, 1 << 20), Catch::Contains("exceeds the limit"));

  header = 12;  // not a multiple of 8
  std::memcpy(prefix + 4, &header, 4);
  REQUIRE_THROWS_WITH(parse_prefix(prefix, uint64_t{8} << 30), Catch::Contains("header length 12"));
}

TEST_CASE("compact calls and results stand for the Call and Result they carry", "[wire]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  const std::string args(40, 'a'), value(24, 'v');
  write_compact_call(sv[0], 11, 0xabcdefull, 0x1234ull, args.data(), args.size());
  write_compact_result(sv[0], 11, CompactStatus::kOk, value.data(), value.size());
  write_compact_result(sv[0], 12, CompactStatus::kResendInFull);
  FrameReader reader(sv[1]);
  auto call_frame = reader.next();
  REQUIRE(call_frame);
  const auto& call = std::get<Call>(call_frame->message);
  CHECK(call.compact);
  CHECK(call.request_id == 11);
  CHECK(call.kernel_id == 0xabcdefull);
  CHECK(call.signature_id == 0x1234ull);
  CHECK(call.mode == CallMode::kFetch);
  CHECK(call.kernel_name.empty());
  CHECK(call_frame->payload == args);
  auto ok = reader.next();
  REQUIRE(ok);
  CHECK(std::get<Result>(ok->message).ok);
  CHECK_FALSE(std::get<Result>(ok->message).resend_in_full);
  CHECK(ok->payload == value);
  auto resend = reader.next();
  REQUIRE(resend);
  CHECK(std::get<Result>(resend->message).request_id == 12);
  CHECK_FALSE(std::get<Result>(resend->message).ok);
  CHECK(std::get<Result>(resend->message).resend_in_full);
  // The unbuffered reader too.
  write_compact_call(sv[0], 13, 1, 2, args.data(), args.size());
  auto unbuffered = read_frame(sv[1]);
  REQUIRE(unbuffered);
  CHECK(std::get<Call>(unbuffered->message).request_id == 13);
  CHECK(unbuffered->payload == args);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST_CASE("a compact frame with a wrong header size or an unknown status is refused", "[wire][errors]") {
  auto frame = [](uint32_t magic, uint32_t header_bytes, uint64_t status) {
    std::string bytes(kFramePrefixBytes + header_bytes, '\0');
    std::memcpy(bytes.data(), &magic, 4);
    std::memcpy(bytes.data() + 4, &header_bytes, 4);
    if (header_bytes >= 16) std::memcpy(bytes.data() + kFramePrefixBytes + 8, &status, 8);
    return bytes;
  };
  CHECK_THROWS_WITH(parse_frame(frame(kCompactCallMagic, 16, 0)),
                    Catch::Contains("compact frame header of 16 bytes (must be 24)"));
  CHECK_THROWS_WITH(parse_frame(frame(kCompactResultMagic, 24, 0)),
                    Catch::Contains("compact frame header of 24 bytes (must be 16)"));
  CHECK_THROWS_WITH(parse_frame(frame(kCompactResultMagic, 16, 7)),
                    Catch::Contains("compact result with unknown status 7"));
  CHECK(std::get<Result>(parse_frame(frame(kCompactResultMagic, 16, 0)).message).ok);
}

TEST_CASE("frames cross a real socket pair intact, payload included", "[wire]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  std::string payload(100000, 'x');
  payload[777] = 'y';
  write_frame(sv[0], Call{1, 2, 3, "k", "(str)->str", CallMode::kStore}, payload);
  auto frame = read_frame(sv[1]);
  REQUIRE(frame);
  CHECK(std::get<Call>(frame->message).kernel_name == "k");
  CHECK(frame->payload == payload);
  ::close(sv[0]);
  CHECK_FALSE(read_frame(sv[1]));  // clean EOF
  ::close(sv[1]);
}

TEST_CASE("a connection closed in the middle of a frame is reported as Disconnected", "[wire][errors]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  unsigned char prefix[kFramePrefixBytes] = {};
  uint32_t magic = kFrameMagic, header = 64;
  uint64_t payload = 0;
  std::memcpy(prefix, &magic, 4);
  std::memcpy(prefix + 4, &header, 4);
  std::memcpy(prefix + 8, &payload, 8);
  REQUIRE(::write(sv[0], prefix, sizeof prefix) == sizeof prefix);
  ::close(sv[0]);
  try {
    read_frame(sv[1]);
    FAIL("read_frame accepted a truncated frame");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Disconnected);
    CHECK_THAT(e.what(), Catch::Contains("closed in the middle"));
  }
  ::close(sv[1]);
}

namespace {
// The most memory this process has ever had resident (/proc/self/status VmHWM), in bytes.
uint64_t peak_rss_bytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  char line[256];
  uint64_t kb = 0;
  while (f && std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmHWM: %lu kB", &kb) == 1) break;
  }
  if (f) std::fclose(f);
  return kb * 1024;
}
}  // namespace

TEST_CASE("a frame announcing 4 GiB that never comes costs the reader little memory", "[wire][errors]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  std::string header = encode(Result{1, true, {}});
  unsigned char prefix[kFramePrefixBytes] = {};
  uint32_t magic = kFrameMagic, header_bytes = static_cast<uint32_t>(header.size());
  uint64_t payload = uint64_t{4} << 30;
  std::memcpy(prefix, &magic, 4);
  std::memcpy(prefix + 4, &header_bytes, 4);
  std::memcpy(prefix + 8, &payload, 8);
  REQUIRE(::write(sv[0], prefix, sizeof prefix) == sizeof prefix);
  REQUIRE(::write(sv[0], header.data(), header.size()) == static_cast<ssize_t>(header.size()));
  REQUIRE(::write(sv[0], "some", 4) == 4);  // 4 of the 4 GiB, then the peer goes away
  ::close(sv[0]);
  uint64_t before = peak_rss_bytes();
  FrameReader reader(sv[1]);
  CHECK_THROWS_AS(reader.next(), Error);
  // Zero-filling the announced payload would have committed 4 GiB.
  CHECK(peak_rss_bytes() - before < (uint64_t{256} << 20));
  ::close(sv[1]);
}
