// dj::Error: the one exception type of dj's API, with a kind that says how to recover.
#pragma once

#include <stdexcept>
#include <string>

namespace dj {

// What went wrong, as a recovery action.
enum class ErrorKind {
  InvalidArgument,    // Fix the call: bad count, unknown option, wrong argument types.
  NotFound,           // No such kernel, worker, plugin file or remote value: load or create it.
  RemoteFailure,      // Your kernel threw on a worker; the message is the kernel's own.
  Disconnected,       // A worker or link was lost (ProcessExited): re-add workers, then retry.
  ResourceExhausted,  // Memory, shm, descriptors or slots ran out: retry later or ask for less.
  Internal,           // A dj bug: please report it with the message.
  Cancelled,          // interrupt() (or Ctrl-C) stopped it at your request: rerun if wanted.
};

// Name of the kind as printed in messages ("RemoteFailure").
const char* to_string(ErrorKind kind) noexcept;

// The exception every dj call throws. what() is the full message a user reads.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, int worker = 0, std::string kernel = {})
      : std::runtime_error(message), kind_(kind), worker_(worker), kernel_(std::move(kernel)) {}

  ErrorKind kind() const noexcept { return kind_; }
  // dj pid of the process the error comes from (0 when not tied to one).
  int worker() const noexcept { return worker_; }
  // Kernel involved, empty when none.
  const std::string& kernel() const noexcept { return kernel_; }

 private:
  ErrorKind kind_;
  int worker_;
  std::string kernel_;
};

// Distributed.jl's name for the error a kernel throws on a worker (kind RemoteFailure) or for
// a worker lost under a call (ProcessExited, kind Disconnected): both are dj::Error.
using RemoteException = Error;

}  // namespace dj
