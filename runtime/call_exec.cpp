// Argument decoding, signature checks and kernel invocation for one call.
#include "call_exec.hpp"

#include <cstring>

#include "dj/error.hpp"
#include "shared_arrays.hpp"

namespace dj::detail {
namespace {

template <class T>
T load(const std::string& blob, size_t& at) {
  if (blob.size() - at < sizeof(T)) {
    throw Error(ErrorKind::InvalidArgument, "dj: argument list ends early at byte " +
                                                std::to_string(at) + " of " +
                                                std::to_string(blob.size()));
  }
  T v;
  std::memcpy(&v, blob.data() + at, sizeof v);
  at += sizeof v;
  return v;
}

// Collects a kernel's result through the plugin ABI's sink.
struct SinkState {
  std::string result;
  bool reserved = false;
  bool failed = false;
  std::string message;
};

unsigned char* sink_reserve(void* ctx, size_t bytes) {
  auto* s = static_cast<SinkState*>(ctx);
  s->reserved = true;
  s->result.resize(bytes);
  return reinterpret_cast<unsigned char*>(s->result.data());
}

void sink_fail(void* ctx, const char* message) {
  auto* s = static_cast<SinkState*>(ctx);
  s->failed = true;
  s->message = message ? message : "(no message)";
}

CallOutcome failure(ErrorKind kind, std::string message, int pid, const std::string& kernel) {
  CallOutcome out;
  out.error = {kind, std::move(message), pid, kernel};
  return out;
}

}  // namespace

std::vector<ParsedArg> parse_args(const std::string& blob) {
  size_t at = 0;
  auto count = load<uint32_t>(blob, at);
  if (count > blob.size()) {
    throw Error(ErrorKind::InvalidArgument,
                "dj: argument count " + std::to_string(count) + " exceeds the blob size");
  }
  std::vector<ParsedArg> args(count);
  for (auto& a : args) {
    auto tag = load<uint8_t>(blob, at);
    if (tag == 0) {
      auto len = load<uint64_t>(blob, at);
      if (len > blob.size() - at) {
        throw Error(ErrorKind::InvalidArgument, "dj: argument of " + std::to_string(len) +
                                                    " bytes overruns the argument list");
      }
      a.data = reinterpret_cast<const unsigned char*>(blob.data()) + at;
      a.size = static_cast<size_t>(len);
      at += a.size;
    } else if (tag == 1) {
      a.is_ref = true;
      a.owner = load<int32_t>(blob, at);
      a.ref = load<uint64_t>(blob, at);
    } else {
      throw Error(ErrorKind::InvalidArgument, "dj: unknown argument tag " + std::to_string(tag));
    }
  }
  if (at != blob.size()) {
    throw Error(ErrorKind::InvalidArgument, "dj: " + std::to_string(blob.size() - at) +
                                                " stray bytes after the arguments");
  }
  return args;
}

std::string not_loaded_message(const std::string& kernel, int pid) {
  return "kernel '" + kernel + "' is not loaded on worker " + std::to_string(pid) +
         " (load its plugin with everywhere)";
}

PendingCall accept_call(const ExecContext& ctx, wire::Call call, std::string args) {
  PendingCall p{std::move(call), std::move(args), {}, nullptr, {}};
  p.kernel = ctx.registry.find(p.call.kernel_id);
  try {
    p.parsed = parse_args(p.args);
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

CallOutcome execute_call(const ExecContext& ctx, PendingCall& p) {
  const int pid = ctx.self_pid;
  const std::string& name = p.call.kernel_name;
  // Values of reference arguments, kept alive until the kernel returns.
  std::vector<ValuePtr> held;
  std::vector<dj_arg> args;
  std::string problem;
  ErrorKind kind = ErrorKind::InvalidArgument;

  for (size_t i = 0; i < p.parsed.size(); ++i) {
    const ParsedArg& a = p.parsed[i];
    if (!a.is_ref) {
      args.push_back({a.data, a.size});
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
  if (!p.kernel) return failure(ErrorKind::NotFound, not_loaded_message(name, pid), pid, name);
  if (p.kernel->signature != p.call.signature) {
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

  SinkState state;
  dj_sink sink{&state, &sink_reserve, &sink_fail};
  {
    ScopedSegmentTable segments(ctx.segments);
    p.kernel->invoke(args.data(), args.size(), &sink);
  }
  if (state.failed) {
    return failure(ErrorKind::RemoteFailure,
                   "on worker " + std::to_string(pid) + ": kernel '" + name + "' threw: " +
                       state.message,
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
  return out;
}

}  // namespace dj::detail
