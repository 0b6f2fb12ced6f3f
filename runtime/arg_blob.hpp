// Decoding of the argument and batch blobs that calls carry between processes. Kept apart from
// call_exec (which needs the registry, the value store and shared memory) so that the fuzzer
// reaches these decoders with nothing else linked in.
//
// Argument blob: u32 count, then per argument a u8 tag:
//   0 (value): u64 length, then the encoded value (dj/serialize.hpp)
//   1 (ref):   i32 owner pid, u64 ref id
//   2 (aligned value): u8 pad (0..7), pad zero bytes, u64 length, then the encoded value,
//              which starts at a multiple of 8 from the blob's start (large values: an array
//              in it can be read in place)
// Batch blob (a pmap call's payload): per element u64 length, then that element's argument blob.
// Batch result (the worker's answer): per element u8 tag (1 ok, else 2 + ErrorKind), u64 length,
// then the encoded value or the error text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dj/error.hpp"

namespace dj::detail {

struct ParsedArg {
  bool is_ref = false;
  // is_ref == false: where the value's bytes are, as an offset into the parsed blob (not a
  // pointer: a PendingCall is moved after parsing, and a short blob lives inside its string).
  size_t offset = 0;
  size_t size = 0;
  int32_t owner = 0;  // is_ref == true
  uint64_t ref = 0;
};

// Bytes the smallest argument takes in a blob (a tag and a zero length).
inline constexpr size_t kMinArgBytes = 1 + 8;
// Bytes the smallest batch element takes (its length and an empty argument count).
inline constexpr size_t kMinBatchElementBytes = 8 + 4;

// Throws: dj::Error(InvalidArgument) naming what is malformed.
std::vector<ParsedArg> parse_args(const std::string& blob);
std::vector<ParsedArg> parse_args(const char* data, size_t size);

// The next element of a batch blob, starting at `at` (advanced past it).
// Throws: InvalidArgument when the length overruns the blob.
std::string_view next_batch_element(std::string_view batch, size_t& at);

// Where each element's outcome lies in a batch Result payload (no copies). Throws
// InvalidArgument if malformed.
struct BatchSlot {
  bool ok = false;
  ErrorKind kind = ErrorKind::Internal;  // when !ok; the bytes are the error text
  size_t offset = 0, size = 0;
};
std::vector<BatchSlot> index_batch_results(const std::string& payload, uint32_t count);

}  // namespace dj::detail
