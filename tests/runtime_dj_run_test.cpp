// dj-run: `julia -p N program` for dj, its options and its errors.
#include <catch2/catch.hpp>

#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {
std::string dj_run() { return test::program("dj-run"); }
std::string master() { return test::program("test_master"); }
}  // namespace

TEST_CASE("dj-run -p N starts the program with N workers already added", "[dj-run]") {
  for (int n : {1, 2, 4}) {
    DYNAMIC_SECTION("-p " << n) {
      auto r = test::run_command(dj_run() + " -p " + std::to_string(n) + " " + master() +
                                 " nworkers");
      CHECK(r.status == 0);
      std::string expected = "nworkers=" + std::to_string(n) + " workers=";
      for (int pid = 2; pid < 2 + n; ++pid) expected += std::to_string(pid) + ",";
      CHECK_THAT(r.output, Contains(expected));
    }
  }
  auto r = test::run_command(dj_run() + " " + master() + " nworkers");
  CHECK_THAT(r.output, Contains("nworkers=1 workers=1,"));
}

TEST_CASE("dj-run exits with the program's exit status", "[dj-run]") {
  CHECK(test::run_command(dj_run() + " -p 1 " + master() + " exit 7").status == 7);
  CHECK(test::run_command(dj_run() + " " + master() + " exit 0").status == 0);
}

TEST_CASE("dj-run --help describes its usage", "[dj-run]") {
  auto r = test::run_command(dj_run() + " --help");
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("usage: dj-run [-p N] [--hosts LIST | --machine-file FILE]"));
}

TEST_CASE("dj-run refuses a bad worker count or a missing program with a clear error", "[dj-run][errors]") {
  for (std::string bad : {"0", "-1", "abc", "3x", "99999"}) {
    auto r = test::run_command(dj_run() + " -p " + bad + " " + master() + " nworkers");
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains("invalid worker count '" + bad + "'"));
  }
  auto none = test::run_command(dj_run() + " -p 2");
  CHECK(none.status == 2);
  CHECK_THAT(none.output, Contains("no PROGRAM given"));
  auto missing = test::run_command(dj_run() + " -p 2 /nonexistent/master");
  CHECK(missing.status == 127);
  CHECK_THAT(missing.output, Contains("cannot run '/nonexistent/master'"));
  auto option = test::run_command(dj_run() + " --frobnicate x");
  CHECK(option.status == 2);
  CHECK_THAT(option.output, Contains("unknown option '--frobnicate'"));
}
