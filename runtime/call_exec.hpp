// Running one call on the process that received it: the argument encoding (values inline,
// Futures as references), kernel lookup and signature check, and the kernel invocation. Shared
// by dj-worker and the master's own executor (pid 1), so both behave identically. The blob
// formats and their decoders are in arg_blob.hpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arg_blob.hpp"
#include "plugins/registry.hpp"
#include "shared_arrays.hpp"
#include "shm/segment.hpp"
#include "value_store.hpp"
#include "wire/bulk.hpp"
#include "wire/codec.hpp"

namespace dj::detail {

struct CallOutcome {
  bool ok = false;
  std::string result;  // Encoded result when ok (empty when result_lent).
  // The result was written into ExecContext::lend_result's memory (lent_bytes of it).
  bool result_lent = false;
  size_t lent_bytes = 0;
  wire::RemoteError error;
};

struct ExecContext {
  const KernelRegistry& registry;
  ValueStore& store;
  int self_pid;
  // Fetches a value owned by another process (through the master). Throws dj::Error.
  std::function<StoredValue(int owner, uint64_t ref)> fetch_remote;
  // The SharedArray segments mapped in this process: kernels' SharedArray arguments attach here.
  SegmentTable* segments = nullptr;
  // Room for a fetch-mode call's large result in the connection's shared memory, or nullptr
  // (wire::BulkArena::reserve); unlend_result gives it back if the kernel then fails.
  std::function<unsigned char*(size_t)> lend_result;
  std::function<void()> unlend_result;
};

// Interrupts are a generation count: interrupt_all() cancels every call accepted before it
// (the running one sees dj::interrupted() turn true; queued ones fail before they start).
void interrupt_all() noexcept;
// The process-wide count, and the one the running call was accepted under.
extern std::atomic<uint64_t> g_interrupt_generation;
extern std::atomic<uint64_t> g_running_generation;
inline bool is_interrupted() noexcept {
  return g_running_generation.load(std::memory_order_relaxed) <
         g_interrupt_generation.load(std::memory_order_relaxed);
}

// A received call, resolved against the registry at arrival (so a later reload does not
// change what it runs) and with its local reference arguments pinned.
struct PendingCall {
  wire::Call call;
  std::string args;
  // Arguments lent by a same-host master (wire/bulk.hpp; then `args` is empty): read in place,
  // and dropped as soon as the kernel has run, which hands the memory back.
  std::shared_ptr<wire::BulkPayload> lent_args;
  std::vector<ParsedArg> parsed;
  std::shared_ptr<const KernelEntry> kernel;  // null: not loaded here
  std::string arrival_error;                  // set when the blob is malformed
  uint64_t generation = 0;                    // interrupt generation at arrival
  // A compact call (wire/compact.hpp) whose kernel or signature id this process lacks: it is
  // not run; the caller is told to send it in full.
  bool resend_in_full = false;
};

// Parses and pins; never throws (problems are recorded for execute_call to report). A batch's
// lent arguments are copied (a batch is read element by element from a string).
PendingCall accept_call(const ExecContext& ctx, wire::Call call, std::string args,
                        std::shared_ptr<wire::BulkPayload> lent = nullptr);

// Runs the call. Never throws: every failure becomes a CallOutcome error that names the
// worker, the kernel and the problem.
CallOutcome execute_call(const ExecContext& ctx, PendingCall& pending);

// Runs a batch-mode call: the kernel on each of the call's argument lists, in order. Returns
// the Result payload: per element u8 ok, u64 length, then the encoded value or the error text.
// Once interrupted, the remaining elements fail with kind Cancelled. Never throws. Not for a
// batch with an arrival_error (refused whole): execute_call reports that one.
std::string execute_batch(const ExecContext& ctx, PendingCall& pending);

// The express path's run of a kernel with a numbers-only entry (dj_invoke_numbers_fn), inline
// on its path: `kernel`, already checked against the call's signature id, on the argument blob
// read in place. Returns the result's size, written at `out` (kNumbersResultRoom bytes, not
// overlapping the blob); or -2 when the kernel failed (its outcome is then in `other`); or -1
// when nothing ran (no such entry, not its layout, or the call was interrupted): then take
// run_in_place, which reports those.
inline constexpr size_t kNumbersResultRoom = 16;
// The numbers-only entry's sink: it never reserves, and an error's message is allocated only
// when there is one. numbers_failed makes its outcome (or that of an entry that answered more
// than kNumbersResultRoom bytes).
unsigned char* numbers_no_reserve(void* ctx, size_t bytes);
void numbers_fail(void* ctx, const char* message);
[[gnu::cold]] void numbers_failed(const ExecContext& ctx, const KernelEntry& kernel,
                                  const std::unique_ptr<std::string>& message, long written,
                                  std::unique_ptr<CallOutcome>& other);
inline long run_numbers(const ExecContext& ctx, const KernelEntry& kernel, uint64_t generation,
                        const char* blob, size_t blob_bytes, unsigned char* out,
                        std::unique_ptr<CallOutcome>& other) {
  if (!kernel.invoke_numbers) return -1;
  g_running_generation.store(generation, std::memory_order_relaxed);
  if (is_interrupted()) return -1;
  std::unique_ptr<std::string> failure;
  dj_sink sink{&failure, &numbers_no_reserve, &numbers_fail};
  long written;
  {
    ScopedSegmentTable segments(ctx.segments);
    written = kernel.invoke_numbers(reinterpret_cast<const unsigned char*>(blob), blob_bytes,
                                    out, &sink);
  }
  if (written <= static_cast<long>(kNumbersResultRoom) && written >= -1) return written;
  numbers_failed(ctx, kernel, failure, written, other);
  return -2;
}

// The express path's general run (a same-host remotecall_fetch through the ring's slot, on a
// worker with nothing else running): `kernel`, already checked against the call's signature
// id, on the argument blob read in place. Returns false, running nothing, when the blob holds a
// Future argument, more than kMaxInPlaceArgs arguments, or is malformed: the caller then
// takes accept_call and execute_call, which resolve and report those. Otherwise true: a
// result of up to `room` bytes is written at `out` (`bytes` of it, `other` left empty);
// a larger one, or the error, is in `other` as execute_call would give it (a pointer, not an
// optional: GCC 12 zero-fills a disengaged std::optional's whole payload, a `rep stos` of
// 144 bytes on every express call, measured on its path).
inline constexpr size_t kMaxInPlaceArgs = 8;
bool run_in_place(const ExecContext& ctx, const KernelEntry& kernel, uint64_t generation,
                  const char* blob, size_t blob_bytes, unsigned char* out, size_t room,
                  size_t& bytes, std::unique_ptr<CallOutcome>& other);
// The interrupt generation a call accepted now runs under (PendingCall::generation).
uint64_t current_generation() noexcept;

// The text of the "kernel not loaded" error (the notebook's "What happened?" cell).
std::string not_loaded_message(const std::string& kernel, int pid);

}  // namespace dj::detail
