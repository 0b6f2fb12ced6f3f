// SHA-256 (FIPS 180-4), used to name and verify plugin images shipped to workers.
#pragma once

#include <cstddef>
#include <string>

namespace dj::detail {

// The 32-byte digest of `data`.
std::string sha256(const void* data, size_t bytes);
inline std::string sha256(const std::string& data) { return sha256(data.data(), data.size()); }

// Lower-case hex of any byte string (for messages and file names).
std::string to_hex(const std::string& bytes);

}  // namespace dj::detail
