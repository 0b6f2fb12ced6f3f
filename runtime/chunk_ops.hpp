// The built-in DArray chunk operations (wire::ChunkOp slice, sum, fill, rand, length): they
// need no plugin, so every process can run them where a chunk lives.
#pragma once

#include <vector>

#include "call_exec.hpp"
#include "dj/plugin_abi.h"

namespace dj::detail {

bool is_builtin_chunk_op(wire::ChunkOp op);

// Runs built-in `call.chunk_op` on resolved arguments; never throws (errors name the worker and
// the operation).
CallOutcome run_chunk_builtin(int pid, const wire::Call& call, const std::vector<dj_arg>& args);

// Sum of n doubles read from possibly unaligned memory, in four independent lanes (so the loop
// is bound by memory, not by the latency of one chain of additions). Also the serial baseline
// of the DArray benchmark, so both sides sum the same way.
double sum_f64(const unsigned char* data, size_t n);

}  // namespace dj::detail
