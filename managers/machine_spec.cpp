// Distributed.jl's machine specs ("[count*][user@]host[:port] [bind_addr[:port]]") and machine
// files: pure parsing, kept apart from the libssh code that uses the result.
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <tuple>

#include "dj/dj.hpp"

namespace dj {
namespace {

[[noreturn]] void bad_spec(const std::string& spec, const std::string& why) {
  throw Error(ErrorKind::InvalidArgument, "machine spec '" + spec + "': " + why +
                                              " (format: [count*][user@]host[:port] "
                                              "[bind_addr[:port]])");
}

int parse_port(const std::string& spec, const std::string& text) {
  char* end = nullptr;
  long port = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || port < 1 || port > 65535) {
    bad_spec(spec, "port '" + text + "' is not 1..65535");
  }
  return static_cast<int>(port);
}

// Splits "name:port" (port optional) into name and port; IPv6 addresses go in brackets.
std::pair<std::string, int> split_port(const std::string& spec, const std::string& text) {
  if (!text.empty() && text[0] == '[') {
    auto close = text.find(']');
    if (close == std::string::npos) bad_spec(spec, "unclosed '[' in '" + text + "'");
    std::string rest = text.substr(close + 1);
    if (rest.empty()) return {text.substr(1, close - 1), 0};
    if (rest[0] != ':') bad_spec(spec, "expected ':port' after ']' in '" + text + "'");
    return {text.substr(1, close - 1), parse_port(spec, rest.substr(1))};
  }
  auto colon = text.find(':');
  if (colon == std::string::npos) return {text, 0};
  return {text.substr(0, colon), parse_port(spec, text.substr(colon + 1))};
}

}  // namespace

Machine::Machine(const std::string& spec) {
  std::string text = spec;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  size_t start = text.find_first_not_of(" \t");
  if (start == std::string::npos) bad_spec(spec, "empty");
  text = text.substr(start);
  std::string bind;
  if (auto space = text.find_first_of(" \t"); space != std::string::npos) {
    bind = text.substr(text.find_first_not_of(" \t", space));
    text.resize(space);
    if (bind.find_first_of(" \t") != std::string::npos) bad_spec(spec, "too many fields");
  }
  if (auto star = text.find('*'); star != std::string::npos) {
    std::string n = text.substr(0, star);
    text = text.substr(star + 1);
    if (n == "auto") {
      count = kAutoCount;
    } else {
      char* end = nullptr;
      long c = std::strtol(n.c_str(), &end, 10);
      if (n.empty() || *end != '\0' || c < 1 || c > 4096) {
        bad_spec(spec, "count '" + n + "' is not 1..4096 or auto");
      }
      count = static_cast<int>(c);
    }
  }
  if (auto at = text.find('@'); at != std::string::npos) {
    user = text.substr(0, at);
    text = text.substr(at + 1);
    if (user.empty()) bad_spec(spec, "empty user name before '@'");
  }
  std::tie(host, port) = split_port(spec, text);
  if (host.empty()) bad_spec(spec, "no host name");
  if (!bind.empty()) std::tie(bind_addr, bind_port) = split_port(spec, bind);
}

Machine::Machine(const std::string& host_spec, int count_on_host) : Machine(host_spec) {
  if (count_on_host < 0 || count_on_host > 4096) {
    bad_spec(host_spec, "count " + std::to_string(count_on_host) + " is not 1..4096 or kAutoCount");
  }
  count = count_on_host;
}

std::vector<Machine> read_machine_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw Error(ErrorKind::NotFound,
                "machine file " + path + " cannot be read: " + std::strerror(errno));
  }
  std::vector<Machine> machines;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    try {
      machines.emplace_back(line);
    } catch (const Error& e) {
      throw Error(ErrorKind::InvalidArgument, path + ":" + std::to_string(number) + ": " + e.what());
    }
  }
  if (machines.empty()) {
    throw Error(ErrorKind::InvalidArgument, "machine file " + path + " lists no machine");
  }
  return machines;
}

}  // namespace dj
