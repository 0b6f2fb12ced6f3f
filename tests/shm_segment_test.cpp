// Segments as another local user could attack them: a name planted in /dev/shm before the
// master creates it (a file, or a symlink to a file elsewhere) is refused and left untouched,
// and a created segment is the creator's alone (mode 0600).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "dj/error.hpp"
#include "shm/segment.hpp"
#include "test_support.hpp"

using namespace dj;
using Catch::Contains;

namespace {

std::string unique_name(const char* what) {
  return "/dj-test-" + std::to_string(::getpid()) + "-" + what;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("a segment is created with mode 0600, readable and writable by its owner only", "[shm][security]") {
  std::string name = unique_name("mode");
  auto segment = detail::Segment::create(name, 4096, "a test array");
  struct stat st{};
  REQUIRE(::stat(("/dev/shm" + name).c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
  segment->unlink();
}

TEST_CASE("a segment name planted beforehand is refused, named, and left as it was", "[shm][security]") {
  std::string name = unique_name("planted");
  std::string path = "/dev/shm" + name;
  std::ofstream(path) << "planted";
  ::chmod(path.c_str(), 0666);
  try {
    detail::Segment::create(name, 4096, "a test array");
    FAIL("a pre-created segment name was reused");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::ResourceExhausted);
    CHECK_THAT(e.what(), Contains(name) && Contains("already exists"));
  }
  CHECK(read_file(path) == "planted");  // neither truncated nor unlinked
  ::unlink(path.c_str());
}

TEST_CASE("a symlink planted at a segment's name is not followed", "[shm][security]") {
  test::TempDir dir;
  std::string target = dir.path() + "/victim";
  std::ofstream(target) << "victim's data";
  std::string name = unique_name("symlink");
  std::string path = "/dev/shm" + name;
  REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
  CHECK_THROWS_AS(detail::Segment::create(name, 4096, "a test array"), Error);
  CHECK(read_file(target) == "victim's data");  // the file behind the link is untouched
  struct stat st{};
  CHECK(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));
  ::unlink(path.c_str());
}
