// Argument decoding, signature checks and kernel invocation for one call.
#include "call_exec.hpp"

#include <sys/resource.h>

#include <atomic>
#include <cstring>
#include <string_view>

#include "dj/error.hpp"
#include "chunk_ops.hpp"
#include "shared_arrays.hpp"
#include "type_walk.hpp"

namespace dj::detail {

// Interrupt generations (see interrupt_all).
std::atomic<uint64_t> g_interrupt_generation{0};
std::atomic<uint64_t> g_running_generation{0};

namespace {

// Collects a kernel's result through the plugin ABI's sink.
struct SinkState {
  std::string result;
  // Where a large result may go instead of `result` (the connection's shared memory), and
  // whether it went there.
  const std::function<unsigned char*(size_t)>* lend = nullptr;
  unsigned char* lent = nullptr;
  size_t lent_bytes = 0;
  // A batch element's result goes straight into the batch's Result payload: tag 1, u64
  // length, the bytes, appended at append_at.
  std::string* append_to = nullptr;
  size_t append_at = 0;
  bool reserved = false;
  bool failed = false;
  std::string message;
};

unsigned char* sink_reserve(void* ctx, size_t bytes) {
  auto* s = static_cast<SinkState*>(ctx);
  s->reserved = true;
  if (s->append_to) {
    std::string& out = *s->append_to;
    s->append_at = out.size();
    out.resize(s->append_at + 9 + bytes);
    out[s->append_at] = 1;
    uint64_t n = bytes;
    std::memcpy(out.data() + s->append_at + 1, &n, 8);
    return reinterpret_cast<unsigned char*>(out.data() + s->append_at + 9);
  }
  if (s->lend && *s->lend && (s->lent = (*s->lend)(bytes))) {
    s->lent_bytes = bytes;
    return s->lent;
  }
  s->result.resize(bytes);
  return reinterpret_cast<unsigned char*>(s->result.data());
}

// Records a kernel's error in its sink's state (a SinkState, or run_in_place's InPlaceSink).
template <class State>
void sink_fail(void* ctx, const char* message) {
  auto* s = static_cast<State*>(ctx);
  s->failed = true;
  s->message = message ? message : "(no message)";
}

// What a kernel that threw std::bad_alloc ran into: the address-space limit when one is set
// (the plugin ABI passes only the exception's text, so "std::bad_alloc" is recognised by it).
std::string out_of_memory_note(const std::string& message) {
  if (message != "std::bad_alloc") return "";
  rlimit limit{};
  if (::getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return " (out of memory; no address-space limit, RLIMIT_AS, is set on this worker)";
  }
  return " (out of memory: this worker's address-space limit, RLIMIT_AS, is " +
         std::to_string(limit.rlim_cur >> 20) + " MiB)";
}

CallOutcome failure(ErrorKind kind, std::string message, int pid, const std::string& kernel) {
  CallOutcome out;
  out.error = {kind, std::move(message), pid, kernel};
  return out;
}

}  // namespace

std::string not_loaded_message(const std::string& kernel, int pid) {
  return "kernel '" + kernel + "' is not loaded on worker " + std::to_string(pid) +
         " (load its plugin with everywhere)";
}

PendingCall accept_call(const ExecContext& ctx, wire::Call call, std::string args,
                        std::shared_ptr<wire::BulkPayload> lent) {
  if (lent && call.mode == wire::CallMode::kBatch) {
    args.assign(reinterpret_cast<const char*>(lent->data()), lent->size());
    lent.reset();
  }
  PendingCall p{std::move(call), std::move(args), std::move(lent), {}, nullptr, {},
                g_interrupt_generation.load()};
  p.kernel = ctx.registry.find(p.call.kernel_id);
  if (p.call.compact) {
    // Name and signature are the registry's; an id this process lacks is answered "send it
    // in full", whose answer names the kernel and both signatures.
    if (!p.kernel || p.kernel->signature_id != p.call.signature_id) {
      p.resend_in_full = true;
      return p;
    }
    p.call.kernel_name = p.kernel->name;
  }
  if (p.call.mode == wire::CallMode::kBatch) {
    // Elements are parsed one by one; a count the payload cannot hold is refused whole (else
    // a corrupt count would make execute_batch write billions of error outcomes).
    if (p.call.batch_count > p.args.size() / kMinBatchElementBytes) {
      p.arrival_error = "batch of " + std::to_string(p.call.batch_count) +
                        " elements in a payload of " + std::to_string(p.args.size()) + " bytes";
    }
    return p;
  }
  try {
    p.parsed = p.lent_args ? parse_args(reinterpret_cast<const char*>(p.lent_args->data()),
                                        p.lent_args->size())
                           : parse_args(p.args);
  } catch (const Error& e) {
    p.arrival_error = e.what();
    return p;
  }
  for (auto& a : p.parsed) {
    if (a.is_ref && a.owner == ctx.self_pid) ctx.store.pin(a.ref);
  }
  if (p.call.mode == wire::CallMode::kStore) ctx.store.expect(p.call.ref_id);
  return p;
}

namespace {

// A compact call's signature id was checked on arrival against the kernel's.
bool signature_matches(const PendingCall& p) {
  return p.call.compact ? p.kernel->signature_id == p.call.signature_id
                        : p.kernel->signature == p.call.signature;
}

CallOutcome cancelled(const ExecContext& ctx, const std::string& kernel) {
  return failure(ErrorKind::Cancelled,
                 "on worker " + std::to_string(ctx.self_pid) + ": call of '" + kernel +
                     "' was cancelled by interrupt() before it started",
                 ctx.self_pid, kernel);
}

SinkState invoke(const ExecContext& ctx, const KernelEntry& kernel,
                 const std::vector<dj_arg>& args,
                 const std::function<unsigned char*(size_t)>* lend = nullptr) {
  SinkState state;
  state.lend = lend;
  dj_sink sink{&state, &sink_reserve, &sink_fail<SinkState>};
  ScopedSegmentTable segments(ctx.segments);
  kernel.invoke(args.data(), args.size(), &sink);
  return state;
}

CallOutcome outcome_of(const ExecContext& ctx, const std::string& name, SinkState& state);

// A batch element's run when nothing can go wrong before the kernel: its one value argument
// read in place, its result written straight into `out`. Returns false (nothing appended) when
// the element needs the general path (another argument shape).
bool run_batch_element_in_place(const ExecContext& ctx, const PendingCall& p,
                                std::string_view element, std::string& out) {
  // u32 count 1, u8 tag 0 (a value), u64 length, then exactly that many bytes.
  if (element.size() < 13) return false;
  uint32_t count;
  uint64_t length;
  std::memcpy(&count, element.data(), 4);
  std::memcpy(&length, element.data() + 5, 8);
  if (count != 1 || element[4] != 0 || length != element.size() - 13) return false;
  dj_arg arg{reinterpret_cast<const unsigned char*>(element.data()) + 13, length};
  SinkState state;
  state.append_to = &out;
  dj_sink sink{&state, &sink_reserve, &sink_fail<SinkState>};
  {
    ScopedSegmentTable segments(ctx.segments);
    p.kernel->invoke(&arg, 1, &sink);
  }
  if (state.reserved && !state.failed) return true;
  if (state.reserved) out.resize(state.append_at);  // reserved, then failed: drop the bytes
  CallOutcome o = outcome_of(ctx, p.call.kernel_name, state);
  out += static_cast<char>(static_cast<int>(o.error.kind) + 2);
  uint64_t n = o.error.message.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += o.error.message;
  return true;
}

// A DArray operation over one chunk (an encoded vec<T>): the kernel on every element (map), or
// folding the elements with it (reduce). See wire::Elementwise.
CallOutcome run_elementwise(const ExecContext& ctx, const PendingCall& p,
                            const std::vector<dj_arg>& args) {
  const int pid = ctx.self_pid;
  const std::string& name = p.call.kernel_name;
  const bool is_map = p.call.chunk_op == wire::ChunkOp::kMap;
  auto fail = [&](ErrorKind kind, const std::string& why) {
    return failure(kind, "on worker " + std::to_string(pid) + ": " + (is_map ? "map" : "reduce") +
                             " of '" + name + "' over a chunk: " + why,
                   pid, name);
  };
  try {
    if (args.size() != 1) return fail(ErrorKind::InvalidArgument, "expects one chunk argument");
    auto [types, result] = split_signature(p.kernel->signature);
    if (is_map && types.size() != 1) {
      return fail(ErrorKind::InvalidArgument, "the kernel must take one argument, not " +
                                                  p.kernel->signature);
    }
    if (!is_map && (types.size() != 2 || types[0] != types[1] || types[0] != result)) {
      return fail(ErrorKind::InvalidArgument,
                  "the kernel must be (T,T)->T, not " + p.kernel->signature);
    }
    auto elements = split_elements(types[0], args[0].data, args[0].size);
    std::string acc;
    if (is_map) {
      uint64_t n = elements.size();
      acc.append(reinterpret_cast<const char*>(&n), sizeof n);
    } else if (elements.empty()) {
      return fail(ErrorKind::InvalidArgument, "the chunk is empty");
    } else {
      acc.assign(reinterpret_cast<const char*>(elements[0].first), elements[0].second);
    }
    for (size_t i = is_map ? 0 : 1; i < elements.size(); ++i) {
      if (is_interrupted()) return fail(ErrorKind::Cancelled, "interrupted");
      std::vector<dj_arg> call_args;
      if (!is_map) {
        call_args.push_back({reinterpret_cast<const unsigned char*>(acc.data()), acc.size()});
      }
      call_args.push_back({elements[i].first, elements[i].second});
      SinkState state = invoke(ctx, *p.kernel, call_args);
      if (state.failed) {
        return fail(ErrorKind::RemoteFailure,
                    "element " + std::to_string(i) + " of the chunk: kernel threw: " +
                        state.message);
      }
      if (is_map) acc += state.result;
      else acc = std::move(state.result);
    }
    CallOutcome out;
    out.ok = true;
    out.result = std::move(acc);
    return out;
  } catch (const Error& e) {
    return fail(e.kind(), e.what());
  }
}

// Runs the kernel on already-parsed arguments (refs resolved here).
CallOutcome run_parsed(const ExecContext& ctx, const PendingCall& p,
                       const std::vector<ParsedArg>& parsed, const char* blob) {
  const int pid = ctx.self_pid;
  const std::string& name = p.call.kernel_name;
  // Values of reference arguments, kept alive until the kernel returns.
  std::vector<ValuePtr> held;
  std::vector<dj_arg> args;
  std::string problem;
  ErrorKind kind = ErrorKind::InvalidArgument;

  for (size_t i = 0; i < parsed.size(); ++i) {
    const ParsedArg& a = parsed[i];
    if (!a.is_ref) {
      args.push_back({reinterpret_cast<const unsigned char*>(blob) + a.offset, a.size});
      continue;
    }
    ValuePtr v;
    if (a.owner == pid) {
      v = ctx.store.take_pinned(a.ref);
    } else if (problem.empty()) {
      try {
        v = std::make_shared<StoredValue>(ctx.fetch_remote(a.owner, a.ref));
      } catch (const Error& e) {
        problem = "argument " + std::to_string(i + 1) + " (a Future on worker " +
                  std::to_string(a.owner) + ") could not be fetched: " + e.what();
        kind = e.kind();
      }
    }
    if (problem.empty() && !v) {
      problem = "argument " + std::to_string(i + 1) + " refers to a value that is not on " +
                "worker " + std::to_string(a.owner) + " (released?)";
      kind = ErrorKind::NotFound;
    } else if (problem.empty() && !v->ok) {
      problem = "argument " + std::to_string(i + 1) + " is a Future whose call failed: " +
                v->error.message;
      kind = v->error.kind;
    }
    if (v) {
      if (v->ok) args.push_back({reinterpret_cast<const unsigned char*>(v->bytes.data()),
                                 v->bytes.size()});
      held.push_back(std::move(v));
    }
  }

  if (!p.arrival_error.empty()) {
    return failure(ErrorKind::InvalidArgument,
                   "on worker " + std::to_string(pid) + ": malformed call of '" + name +
                       "': " + p.arrival_error,
                   pid, name);
  }
  if (is_builtin_chunk_op(p.call.chunk_op)) {
    if (!problem.empty()) {
      return failure(kind, "on worker " + std::to_string(pid) + ": DArray chunk: " + problem,
                     pid, {});
    }
    return run_chunk_builtin(pid, p.call, args);
  }
  if (!p.kernel) return failure(ErrorKind::NotFound, not_loaded_message(name, pid), pid, name);
  if (!signature_matches(p)) {
    return failure(ErrorKind::InvalidArgument,
                   "kernel '" + name + "' on worker " + std::to_string(pid) + " (from " +
                       p.kernel->plugin_name + ") has signature " + p.kernel->signature +
                       ", but was called as " + p.call.signature,
                   pid, name);
  }
  if (!problem.empty()) {
    return failure(kind, "on worker " + std::to_string(pid) + ": calling '" + name + "': " +
                             problem, pid, name);
  }

  if (p.call.chunk_op != wire::ChunkOp::kNone) return run_elementwise(ctx, p, args);
  SinkState state = invoke(ctx, *p.kernel, args,
                           p.call.mode == wire::CallMode::kFetch ? &ctx.lend_result : nullptr);
  if (state.lent && (state.failed || !state.reserved) && ctx.unlend_result) ctx.unlend_result();
  return outcome_of(ctx, p.call.kernel_name, state);
}

// What a kernel's run through the sink amounts to: its result, or the error that names it.
CallOutcome outcome_of(const ExecContext& ctx, const std::string& name, SinkState& state) {
  const int pid = ctx.self_pid;
  if (state.failed && is_interrupted()) {
    return failure(ErrorKind::Cancelled,
                   "on worker " + std::to_string(pid) + ": kernel '" + name +
                       "' was interrupted: " + state.message,
                   pid, name);
  }
  if (state.failed) {
    return failure(ErrorKind::RemoteFailure,
                   "on worker " + std::to_string(pid) + ": kernel '" + name + "' threw: " +
                       state.message + out_of_memory_note(state.message),
                   pid, name);
  }
  if (!state.reserved) {
    return failure(ErrorKind::Internal,
                   "on worker " + std::to_string(pid) + ": kernel '" + name +
                       "' returned without a result",
                   pid, name);
  }
  CallOutcome out;
  out.ok = true;
  out.result = std::move(state.result);
  out.lent_bytes = state.lent ? state.lent_bytes : 0;
  out.result_lent = state.lent != nullptr;
  return out;
}

template <class T>
void put_pod(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// Locates the values of an argument blob that holds only values (tags 0 and 2), at most
// kMaxInPlaceArgs of them. False when it holds anything else or is malformed.
bool locate_values(const char* blob, size_t size, dj_arg* args, size_t& count) {
  auto* p = reinterpret_cast<const unsigned char*>(blob);
  if (size < 4) return false;
  uint32_t n;
  std::memcpy(&n, p, 4);
  if (n > kMaxInPlaceArgs) return false;
  size_t at = 4;
  for (uint32_t i = 0; i < n; ++i) {
    if (at >= size) return false;
    uint8_t tag = p[at++];
    if (tag == 2) {
      if (at >= size || p[at] > 7 || size - at - 1 < p[at]) return false;
      at += 1 + p[at];
    } else if (tag != 0) {
      return false;
    }
    uint64_t len;
    if (size - at < 8) return false;
    std::memcpy(&len, p + at, 8);
    at += 8;
    if (len > size - at) return false;
    args[i] = {p + at, static_cast<size_t>(len)};
    at += static_cast<size_t>(len);
  }
  count = n;
  return at == size;
}

}  // namespace

uint64_t current_generation() noexcept { return g_interrupt_generation.load(); }

// The in-place run's sink: what SinkState does for it, with nothing to construct but two
// empty strings.
struct InPlaceSink {
  unsigned char* out;
  size_t room;
  size_t bytes = 0;
  bool reserved = false;
  bool failed = false;
  std::string spill;    // a result larger than room
  std::string message;  // the kernel's error
};

unsigned char* in_place_reserve(void* ctx, size_t bytes) {
  auto* s = static_cast<InPlaceSink*>(ctx);
  s->reserved = true;
  s->bytes = bytes;
  if (bytes <= s->room) return s->out;
  s->spill.resize(bytes);
  return reinterpret_cast<unsigned char*>(s->spill.data());
}

unsigned char* numbers_no_reserve(void*, size_t) { return nullptr; }
void numbers_fail(void* ctx, const char* message) {
  *static_cast<std::unique_ptr<std::string>*>(ctx) =
      std::make_unique<std::string>(message ? message : "(no message)");
}
void numbers_failed(const ExecContext& ctx, const KernelEntry& kernel,
                    const std::unique_ptr<std::string>& message, long written,
                    std::unique_ptr<CallOutcome>& other) {
  SinkState state;
  state.failed = true;
  state.message = written == -2 ? (message ? *message : "(no message)")
                                : "its numbers-only entry answered " + std::to_string(written) +
                                      " (plugin ABI: a size of at most " +
                                      std::to_string(kNumbersResultRoom) + " bytes, -1 or -2)";
  other = std::make_unique<CallOutcome>(outcome_of(ctx, kernel.name, state));
}

bool run_in_place(const ExecContext& ctx, const KernelEntry& kernel, uint64_t generation,
                  const char* blob, size_t blob_bytes, unsigned char* out, size_t room,
                  size_t& bytes, std::unique_ptr<CallOutcome>& other) {
  dj_arg args[kMaxInPlaceArgs];
  size_t count = 0;
  if (!locate_values(blob, blob_bytes, args, count)) return false;
  g_running_generation.store(generation, std::memory_order_relaxed);
  if (is_interrupted()) {
    other = std::make_unique<CallOutcome>(cancelled(ctx, kernel.name));
    return true;
  }
  InPlaceSink sink_state{out, room, 0, false, false, {}, {}};
  dj_sink sink{&sink_state, &in_place_reserve, &sink_fail<InPlaceSink>};
  {
    ScopedSegmentTable segments(ctx.segments);
    kernel.invoke(args, count, &sink);
  }
  if (sink_state.reserved && !sink_state.failed && sink_state.bytes <= room) {
    bytes = sink_state.bytes;
    return true;
  }
  SinkState state;  // the rare case, as the general path reports it
  state.reserved = sink_state.reserved;
  state.failed = sink_state.failed;
  state.message = std::move(sink_state.message);
  state.result = std::move(sink_state.spill);
  other = std::make_unique<CallOutcome>(outcome_of(ctx, kernel.name, state));
  return true;
}

void interrupt_all() noexcept { g_interrupt_generation.fetch_add(1); }

CallOutcome execute_call(const ExecContext& ctx, PendingCall& p) {
  g_running_generation = p.generation;
  if (is_interrupted()) return cancelled(ctx, p.call.kernel_name);
  return run_parsed(ctx, p, p.parsed,
                    p.lent_args ? reinterpret_cast<const char*>(p.lent_args->data())
                                : p.args.data());
}

std::string execute_batch(const ExecContext& ctx, PendingCall& p) {
  g_running_generation = p.generation;
  std::string out;
  size_t at = 0;
  // What run_parsed checks per element holds for the whole batch: checked once here, then
  // each element runs without allocating (pmap of tiny elements is bound by this loop).
  const bool in_place = p.kernel && p.arrival_error.empty() &&
                        p.call.chunk_op == wire::ChunkOp::kNone &&
                        signature_matches(p);
  for (uint32_t i = 0; i < p.call.batch_count; ++i) {
    CallOutcome o;
    try {
      std::string_view element = next_batch_element(p.args, at);
      if (is_interrupted()) {
        o = cancelled(ctx, p.call.kernel_name);
      } else if (in_place && run_batch_element_in_place(ctx, p, element, out)) {
        continue;
      } else {
        std::vector<ParsedArg> parsed = parse_args(element.data(), element.size());
        for (const auto& a : parsed) {
          if (a.is_ref) throw Error(ErrorKind::InvalidArgument, "dj: pmap elements cannot be Futures");
        }
        o = run_parsed(ctx, p, parsed, element.data());
      }
    } catch (const Error& e) {
      o = failure(e.kind(), "on worker " + std::to_string(ctx.self_pid) + ": " + e.what(),
                  ctx.self_pid, p.call.kernel_name);
      at = p.args.size();  // A malformed batch: the rest cannot be located.
    }
    const std::string& body = o.ok ? o.result : o.error.message;
    out += static_cast<char>(o.ok ? 1 : static_cast<int>(o.error.kind) + 2);
    put_pod<uint64_t>(out, body.size());
    out += body;
  }
  return out;
}

}  // namespace dj::detail
