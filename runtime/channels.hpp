// Glue between RemoteChannel's public calls and the processes that serve them.
#pragma once

#include <functional>
#include <string>
#include <utility>

#include "wire/codec.hpp"

namespace dj::detail {

// How a worker sends a channel operation to the master and waits for the answer.
using MasterRequester =
    std::function<std::pair<wire::Result, std::string>(wire::ChannelOp, std::string)>;
void set_master_requester(MasterRequester requester);
// Called before a kernel blocks on a channel this process owns (dj-worker: let the follower
// thread read the connection meanwhile, so the put that unblocks it is not delayed).
void set_block_hook(std::function<void()> hook);

// Serves an operation on a channel this process owns; `answer` runs exactly once, maybe later
// (a take waiting for a put) and on another thread.
void serve_channel_op(const wire::ChannelOp& op, std::string item,
                      std::function<void(wire::Result, std::string)> answer);

}  // namespace dj::detail
