// The plugin loader: good plugins load from bytes, every kind of bad plugin is refused with an
// error naming the file and the reason, and reloading follows the REPL habit.
#include <catch2/catch.hpp>

#include <fstream>

#include "dj/dj.hpp"
#include "plugins/registry.hpp"
#include "plugins/sha256.hpp"
#include "test_support.hpp"

using namespace dj;
using namespace dj::detail;

namespace {
KernelRegistry::LoadOutcome load_file(KernelRegistry& registry, const std::string& path) {
  std::string bytes = read_plugin_file(path);
  return registry.load(path, sha256(bytes), bytes);
}
}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 test vectors", "[plugins]") {
  CHECK(to_hex(sha256("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(to_hex(sha256("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(to_hex(sha256(std::string(1000000, 'a'))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("a plugin loads from its bytes and exposes its kernels with their signatures", "[plugins]") {
  KernelRegistry registry;
  auto outcome = load_file(registry, test::plugin("test_kernels"));
  CHECK_FALSE(outcome.already_loaded);
  CHECK(outcome.kernel_count > 10);
  auto add = registry.find(kernel_id("add"));
  REQUIRE(add);
  CHECK(add->signature == "(f64,f64)->f64");
  CHECK(registry.find(kernel_id("no_such_kernel")) == nullptr);
}

TEST_CASE("loading the same bytes twice is a no-op", "[plugins]") {
  KernelRegistry registry;
  load_file(registry, test::plugin("test_kernels"));
  auto again = load_file(registry, test::plugin("test_kernels"));
  CHECK(again.already_loaded);
  CHECK(registry.plugin_count() == 1);
}

TEST_CASE("a rebuilt plugin replaces its kernels for lookups made afterwards", "[plugins]") {
  KernelRegistry registry;
  load_file(registry, test::plugin("versioned_v1"));
  auto v1 = registry.find(kernel_id("version"));
  load_file(registry, test::plugin("versioned_v2"));
  auto v2 = registry.find(kernel_id("version"));
  REQUIRE(v1);
  REQUIRE(v2);
  CHECK(v1->invoke != v2->invoke);
  CHECK(registry.plugin_count() == 2);
}

TEST_CASE("bytes that do not match their announced sha256 are refused", "[plugins][errors]") {
  KernelRegistry registry;
  std::string bytes = read_plugin_file(test::plugin("test_kernels"));
  std::string digest = sha256(bytes);
  bytes[bytes.size() / 2] ^= 1;
  REQUIRE_THROWS_WITH(registry.load("k.so", digest, bytes),
                      Catch::Contains("plugin k.so") && Catch::Contains("do not match"));
  CHECK(registry.plugin_count() == 0);
}

TEST_CASE("each kind of bad plugin is refused with the file name and the reason", "[plugins][errors]") {
  KernelRegistry registry;
  test::TempDir dir;

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(read_plugin_file(dir.path() + "/nope.so"),
                        Catch::Contains("nope.so") && Catch::Contains("No such file"));
  }
  SECTION("not an ELF object") {
    std::string path = dir.path() + "/text.so";
    std::ofstream(path) << "this is not a shared object";
    REQUIRE_THROWS_WITH(load_file(registry, path),
                        Catch::Contains(path) && Catch::Contains("not an ELF"));
  }
  SECTION("truncated ELF object") {
    std::string bytes = read_plugin_file(test::plugin("test_kernels")).substr(0, 4096);
    REQUIRE_THROWS_WITH(registry.load("cut.so", sha256(bytes), bytes),
                        Catch::Contains("cut.so") && Catch::Contains("truncated"));
  }
  SECTION("no DJ_PLUGIN descriptor") {
    REQUIRE_THROWS_WITH(load_file(registry, test::plugin("no_kernels")),
                        Catch::Contains("libno_kernels.so") &&
                            Catch::Contains("no kernels registered"));
  }
  SECTION("descriptor with an empty kernel table") {
    REQUIRE_THROWS_WITH(load_file(registry, test::plugin("empty_table")),
                        Catch::Contains("no kernels registered"));
  }
  SECTION("unresolved symbol") {
    REQUIRE_THROWS_WITH(load_file(registry, test::plugin("unresolved")),
                        Catch::Contains("libunresolved.so") &&
                            Catch::Contains("dj_test_symbol_that_does_not_exist"));
  }
  SECTION("built against an incompatible dj") {
    REQUIRE_THROWS_WITH(load_file(registry, test::plugin("bad_abi")),
                        Catch::Contains("libbad_abi.so") && Catch::Contains("ABI 999") &&
                            Catch::Contains("incompatible"));
  }
  CHECK(registry.plugin_count() == 0);
}

TEST_CASE("a kernel of numbers runs straight from its argument blob, and only from its own layout",
          "[plugins][express]") {
  KernelRegistry registry;
  load_file(registry, test::plugin("test_kernels"));
  auto find = [&](const char* name) {
    auto k = registry.find(kernel_id(name));
    REQUIRE(k);
    return k;
  };
  CHECK(find("scale")->invoke_numbers == nullptr);  // a vector parameter
  CHECK(find("greet")->invoke_numbers == nullptr);  // a string
  CHECK(find("sum_view")->invoke_numbers == nullptr);  // an ArrayView

  std::optional<std::string> failure;
  dj_sink sink{&failure, +[](void*, size_t) -> unsigned char* { return nullptr; },
               +[](void* ctx, const char* message) {
                 static_cast<std::optional<std::string>*>(ctx)->emplace(message);
               }};
  unsigned char blob[64], out[16];
  auto add = find("add");
  REQUIRE(add->invoke_numbers);
  const size_t size = detail::encode_small_args<double, double>(blob, 1.5, 2.25);
  REQUIRE(add->invoke_numbers(blob, size, out, &sink) == 8);
  double sum;
  std::memcpy(&sum, out, 8);
  CHECK(sum == 3.75);

  // Anything but exactly (count, then tag 0, size, value per argument) is left to the general
  // entry, and runs nothing.
  auto changed = [&](size_t at, unsigned char byte) {
    unsigned char copy[64];
    std::memcpy(copy, blob, size);
    copy[at] = byte;
    return add->invoke_numbers(copy, size, out, &sink);
  };
  CHECK(add->invoke_numbers(blob, size - 1, out, &sink) == -1);  // short
  CHECK(add->invoke_numbers(blob, size + 1, out, &sink) == -1);  // a byte too many
  CHECK(changed(0, 3) == -1);       // three arguments
  CHECK(changed(4, 1) == -1);       // the first is a Future, not a value
  CHECK(changed(5, 4) == -1);       // a value of 4 bytes, not 8
  CHECK(changed(4 + 17, 2) == -1);  // the second has an alignment pad
  auto bump = find("bump"), read_counter = find("read_counter");
  auto counter = [&] {
    REQUIRE(read_counter->invoke_numbers(blob, detail::encode_small_args<>(blob), out, &sink) == 8);
    int64_t value;
    std::memcpy(&value, out, 8);
    return value;
  };
  const int64_t before = counter();
  unsigned char by_five[32];
  const size_t bump_size = detail::encode_small_args<int64_t>(by_five, int64_t{5});
  CHECK(bump->invoke_numbers(by_five, bump_size - 1, out, &sink) == -1);
  CHECK(counter() == before);  // refused before running
  CHECK(bump->invoke_numbers(by_five, bump_size, out, &sink) == 0);  // void: no bytes
  CHECK(counter() == before + 5);

  // Other number types, bool as Codec<bool> reads it (any non-zero byte is true).
  unsigned char flag[32];
  const size_t flag_size = detail::encode_small_args<bool>(flag, true);
  flag[flag_size - 1] = 7;
  REQUIRE(find("negate_flag")->invoke_numbers(flag, flag_size, out, &sink) == 1);
  CHECK(out[0] == 0);

  // A kernel that throws reports through the sink and writes nothing.
  unsigned char three[32];
  const size_t three_size = detail::encode_small_args<int64_t>(three, int64_t{3});
  std::memset(out, 0xab, sizeof out);
  CHECK(find("fail_on_three")->invoke_numbers(three, three_size, out, &sink) == -2);
  REQUIRE(failure);
  CHECK_THAT(*failure, Catch::Contains("three is not allowed"));
  CHECK(out[0] == 0xab);
}
