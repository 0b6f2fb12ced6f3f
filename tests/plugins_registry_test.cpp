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
