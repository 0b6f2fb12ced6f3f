// Remote calls from the master: sending them, fetching results, releasing remote values,
// running calls on pid 1, and loading plugins everywhere.
#include <algorithm>
#include <cstring>
#include <thread>

#include "cluster.hpp"
#include "identity.hpp"
#include "managers/local_manager.hpp"
#include "plugins/sha256.hpp"
#include "sys.hpp"

namespace dj::detail {
namespace {

wire::Call make_call(const CallTarget& k, wire::CallMode mode, uint64_t request_id,
                     uint64_t ref_id, uint32_t batch_count = 0) {
  return wire::Call{request_id, ref_id,      k.id,        *k.name,
                    *k.signature, mode, batch_count, static_cast<wire::ChunkOp>(k.chunk_op)};
}

void throw_if_failed(const wire::Message& m) {
  if (const auto* r = std::get_if<wire::Result>(&m); r && !r->ok) throw to_error(r->error);
}

}  // namespace

void Cluster::send_or_cork(const std::shared_ptr<WorkerLink>& link, const wire::Message& call,
                           ArgBlob& args) {
  // Small calls nobody waits on yet are corked: the I/O thread writes a burst at once (or the
  // caller's next fetch or wait does, or any other frame to the worker goes after them).
  if (args.lent || args.bytes.size() > kCorkBytes) {
    link->send_args(call, args);
    return;
  }
  cork(link, call, args.bytes);
}

void Cluster::cork(const std::shared_ptr<WorkerLink>& link, const wire::Message& message,
                   const std::string& payload) {
  if (link->cork(message, payload)) {
    {
      std::lock_guard lock(corked_mu_);
      corked_links_.push_back(link);
    }
    wake();
  }
}

void Cluster::flush_corked_links() {
  std::vector<std::weak_ptr<WorkerLink>> links;
  {
    std::lock_guard lock(corked_mu_);
    links.swap(corked_links_);
  }
  for (auto& weak : links) {
    if (auto link = weak.lock()) link->flush();  // A failure is retire()'s to report.
  }
}

void Cluster::flush_corked(int pid) {
  if (pid == 1) return;
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(pid);
    if (it == links_.end()) return;
    link = it->second;
  }
  link->flush();
}

std::shared_ptr<RefState> Cluster::call_store(int pid, const CallTarget& k, ArgBlob&& args) {
  if (pid == 1) {
    uint64_t id;
    {
      std::lock_guard lock(mu_);
      id = next_id_locked();
    }
    auto ref = std::make_shared<RefState>(1, id);
    auto pending = std::make_shared<PendingCall>(
        accept_call(ctx_, make_call(k, wire::CallMode::kStore, 0, id), std::move(args.bytes)));
    std::weak_ptr<RefState> weak = ref;
    local_.submit([this, pending, weak, id, pins = std::move(args.pinned)] {
      CallOutcome out = execute_call(ctx_, *pending);
      bool ok = out.ok;
      wire::RemoteError error = out.error;
      auto waiters = store_.put(
          id, std::make_shared<StoredValue>(StoredValue{ok, std::move(out.result), error}));
      if (auto ref = weak.lock()) ref->complete(ok, error);
      for (auto& w : waiters) w();
    });
    return ref;
  }
  std::shared_ptr<WorkerLink> link;
  std::shared_ptr<RefState> ref;
  {
    std::lock_guard lock(mu_);
    link = find_locked(pid);
    uint64_t id = next_id_locked();
    ref = std::make_shared<RefState>(pid, id);
    link->refs[id] = ref;
    if (!args.pinned.empty()) link->pins[id] = std::move(args.pinned);
    link->in_flight.fetch_add(1);
  }
  send_or_cork(link, make_call(k, wire::CallMode::kStore, 0, ref->id), args);
  return ref;
}

std::pair<std::shared_ptr<WorkerLink>, uint64_t> Cluster::register_call(
    int pid, const std::shared_ptr<Reply>& reply, std::vector<std::shared_ptr<const void>> pins) {
  reply->is_call = true;
  std::lock_guard lock(mu_);
  auto link = find_locked(pid);
  uint64_t id = next_id_locked();
  link->replies[id] = reply;
  if (!pins.empty()) link->pins[id] = std::move(pins);
  link->in_flight.fetch_add(1);
  return {link, id};
}

ser::Bytes Cluster::call_fetch_small(int pid, const CallTarget& k, std::string_view args) {
  ser::Bytes answer;  // the one returned (no move of it on the express path)
  if (pid != 1 && call_direct(pid, k, args, {&answer})) return answer;
  answer = call_fetch_in_full(pid, k, args);
  return answer;
}

ser::Bytes Cluster::call_fetch_in_full(int pid, const CallTarget& k, std::string_view args) {
  ArgBlob blob(pid);
  blob.bytes.assign(args.data(), args.size());
  return call_fetch(pid, k, std::move(blob), false);
}

ser::Bytes Cluster::call_fetch(int pid, const CallTarget& k, ArgBlob&& args, bool try_direct) {
  if (pid == 1) {
    auto ref = call_store(1, k, std::move(args));
    return ser::Bytes(fetch(*ref));
  }
  if (try_direct && !args.lent) {
    ser::Bytes answer;
    if (call_direct(pid, k, args.bytes, {&answer})) return answer;
  }
  auto reply = std::make_shared<Reply>();
  reply->takes_bulk = true;  // a large result is decoded where the worker wrote it
  auto [link, id] = register_call(pid, reply, std::move(args.pinned));
  link->send_args(make_call(k, wire::CallMode::kFetch, id, 0), args);
  const wire::Message& m = await(link, *reply);
  throw_if_failed(m);
  if (reply->bulk) {
    const unsigned char* data = reply->bulk->data();
    size_t size = reply->bulk->size();
    return ser::Bytes(data, size, std::move(reply->bulk));
  }
  return ser::Bytes(std::move(reply->payload));
}

void Cluster::call_discard(int pid, const CallTarget& k, ArgBlob&& args) {
  if (pid == 1) {
    call_store(1, k, std::move(args));  // Dropped at once: the value is released when done.
    return;
  }
  std::shared_ptr<WorkerLink> link;
  uint64_t ref_id = 0;
  {
    std::lock_guard lock(mu_);
    link = find_locked(pid);
    if (!args.pinned.empty()) {
      // The worker answers CallDone only so that the Futures passed stay pinned until then.
      ref_id = next_id_locked();
      link->pins[ref_id] = std::move(args.pinned);
      link->in_flight.fetch_add(1);
    }
  }
  send_or_cork(link, make_call(k, wire::CallMode::kDiscard, 0, ref_id), args);
}

void Cluster::call_batch(int pid, const CallTarget& k, std::string payload, uint32_t count,
                         std::function<void(Reply&)> then) {
  auto reply = std::make_shared<Reply>();
  reply->then = std::move(then);
  if (pid == 1) {
    auto pending = std::make_shared<PendingCall>(
        accept_call(ctx_, make_call(k, wire::CallMode::kBatch, 0, 0, count), std::move(payload)));
    local_.submit([this, pending, reply] {
      if (!pending->arrival_error.empty()) {  // refused whole: its count does not fit
        reply->complete(wire::Result{0, false, execute_call(ctx_, *pending).error}, {});
        return;
      }
      std::string results = execute_batch(ctx_, *pending);
      reply->complete(wire::Result{0, true, {}}, std::move(results));
    });
    return;
  }
  auto [link, id] = register_call(pid, reply, {});
  link->send(make_call(k, wire::CallMode::kBatch, id, 0, count), payload);
}

void Cluster::interrupt(const std::vector<int>& pids, std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<WorkerLink>> targets;
  {
    std::lock_guard lock(mu_);
    for (int pid : pids) {
      if (pid == 1) {
        throw Error(ErrorKind::InvalidArgument,
                    "interrupt: pid 1 is the master; interrupt workers only", 1);
      }
      targets.push_back(find_locked(pid));
    }
  }
  for (auto& link : targets) link->send(wire::Interrupt{});
  auto deadline = std::chrono::steady_clock::now() + grace;
  for (auto& link : targets) {
    while (link->calls_in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  for (auto& link : targets) {
    if (link->calls_in_flight() == 0) continue;
    {
      std::lock_guard lock(mu_);
      if (!links_.count(link->pid)) continue;  // died meanwhile
    }
    // Last resort: the kernel ignores dj::interrupted(). Its calls fail with ProcessExited.
    link->process->kill();
    std::string replacement;
    if (link->is_local) {
      try {
        LocalManager manager(LocalManager::default_exename());
        replacement = " and started worker " +
                      std::to_string(add_workers(manager, 1, std::chrono::milliseconds(20000))
                                         .front()) +
                      " in its place";
      } catch (const Error& e) {
        replacement = "; no replacement could be started: " + std::string(e.what());
      }
    }
    log_line("interrupt: worker " + std::to_string(link->pid) +
             " did not stop its kernel within " + std::to_string(grace.count()) +
             " ms; killed it" + replacement);
  }
}

std::pair<wire::Result, std::string> Cluster::channel_request(wire::ChannelOp op,
                                                              std::string item) {
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    link = find_locked(op.owner);
    op.request_id = next_id_locked();
  }
  auto reply = request(link, op, op.request_id, item);
  const auto& m = std::get<wire::Result>(await(link, *reply));
  return {m, std::move(reply->payload)};
}

void Cluster::channel_send(const wire::ChannelOp& op) {
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(op.owner);
    if (it == links_.end()) return;
    link = it->second;
  }
  link->send(op);
}

std::shared_ptr<RefState> Cluster::store_value(int pid, std::string bytes) {
  uint64_t id;
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    id = next_id_locked();
    if (pid != 1) link = find_locked(pid);
  }
  auto ref = std::make_shared<RefState>(pid, id);
  if (pid == 1) {
    for (auto& w : store_.put(id, std::make_shared<StoredValue>(StoredValue{true, std::move(bytes), {}}))) w();
    ref->complete(true, {});
    return ref;
  }
  {
    std::lock_guard lock(mu_);
    link->refs[id] = ref;
    link->in_flight.fetch_add(1);
  }
  link->send(wire::StoreValue{id}, bytes);
  return ref;
}

int Cluster::least_loaded() const {
  std::lock_guard lock(mu_);
  if (links_.empty()) return 1;
  // Fewest calls in flight; ties go round-robin so that idle workers share the work.
  std::vector<const WorkerLink*> order;
  for (auto& [pid, link] : links_) order.push_back(link.get());
  size_t n = order.size(), start = spawn_cursor_++ % n;
  const WorkerLink* best = nullptr;
  for (size_t j = 0; j < n; ++j) {
    const WorkerLink* l = order[(start + j) % n];
    if (!best || l->calls_in_flight() < best->calls_in_flight()) best = l;
  }
  return best->pid;
}

StoredValue Cluster::fetch_from(int owner, uint64_t ref_id) {
  if (owner == 1) {
    StoredValue out;
    bool known = store_.get_or_wait(ref_id, [&](const ValuePtr& v) { out = *v; });
    if (!known) {
      throw Error(ErrorKind::NotFound,
                  "the master holds no value " + std::to_string(ref_id) + " (released?)", 1);
    }
    return out;  // Values of pid 1 are put before their RefState completes.
  }
  std::shared_ptr<WorkerLink> link;
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    link = find_locked(owner);
    id = next_id_locked();
  }
  auto reply = request(link, wire::Fetch{id, ref_id}, id);
  const auto& m = std::get<wire::Result>(await(link, *reply));
  return StoredValue{m.ok, std::move(reply->payload), m.error};
}

std::string Cluster::fetch(const RefState& ref) {
  flush_corked(ref.owner);
  ref.wait();  // Throws the call's own error.
  {
    std::lock_guard lock(ref.mu);
    if (ref.value) return *ref.value;  // Small values came with their completion.
  }
  StoredValue v;
  try {
    v = fetch_from(ref.owner, ref.id);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Disconnected) throw;
    throw Error(ErrorKind::Disconnected,
                std::string("the value of this Future was lost: ") + e.what(), ref.owner);
  }
  if (!v.ok) throw to_error(v.error);
  return std::move(v.bytes);
}

void Cluster::release(int owner, uint64_t id) noexcept {
  if (owner == 1) {
    store_.release(id);
    return;
  }
  std::shared_ptr<WorkerLink> link;
  {
    std::lock_guard lock(mu_);
    auto it = links_.find(owner);
    if (it == links_.end()) return;  // Its values died with it.
    link = it->second;
    link->refs.erase(id);
  }
  try {
    cork(link, wire::Release{id});  // Dropping many Futures costs one write, not one each.
  } catch (const std::exception&) {
    link->send(wire::Release{id});  // Out of memory to cork it: write it alone.
  }
}

void Cluster::load_plugins_on(const std::vector<std::shared_ptr<WorkerLink>>& links,
                              const std::vector<ShippedPlugin>& plugins) {
  for (const auto& plugin : plugins) {
    std::vector<std::shared_ptr<Reply>> replies;
    for (const auto& link : links) {
      uint64_t id;
      {
        std::lock_guard lock(mu_);
        id = next_id_locked();
      }
      replies.push_back(
          request(link, wire::LoadPlugin{id, plugin.path, plugin.sha256}, id, plugin.bytes));
    }
    std::string failures;
    ErrorKind kind = ErrorKind::RemoteFailure;
    for (auto& reply : replies) {
      const wire::Message& m = reply->wait();
      const wire::RemoteError* e = nullptr;
      if (const auto* r = std::get_if<wire::Result>(&m); r && !r->ok) e = &r->error;
      if (const auto* p = std::get_if<wire::PluginLoaded>(&m); p && !p->ok) e = &p->error;
      if (e) {
        failures += (failures.empty() ? "" : "; ") + e->message;
        kind = e->kind;
      }
    }
    if (!failures.empty()) throw Error(kind, "plugin " + plugin.path + ": " + failures);
  }
}

Plugin Cluster::everywhere(const std::string& path) {
  std::lock_guard serial(load_mu_);
  ShippedPlugin plugin{path, {}, read_plugin_file(path)};
  plugin.sha256 = sha256(plugin.bytes);
  registry_.load(path, plugin.sha256, plugin.bytes);  // The master first: its errors need no worker.
  std::vector<std::shared_ptr<WorkerLink>> links;
  {
    std::lock_guard lock(mu_);
    for (auto& [pid, link] : links_) links.push_back(link);
  }
  load_plugins_on(links, {plugin});
  {
    // Workers added later get it too; a rebuilt plugin supersedes the older image of its path.
    std::lock_guard lock(mu_);
    plugins_.erase(std::remove_if(plugins_.begin(), plugins_.end(),
                                  [&](const ShippedPlugin& p) {
                                    return p.path == path || p.sha256 == plugin.sha256;
                                  }),
                   plugins_.end());
    plugins_.push_back(plugin);
  }
  return Plugin(path, registry_.kernel_names(plugin.sha256));
}

void Cluster::check_kernel(const std::string& plugin, const std::string& name,
                           const std::string& signature) const {
  auto entry = registry_.find(kernel_id(name));
  if (!entry) {
    throw Error(ErrorKind::NotFound, "plugin " + plugin + " has no kernel '" + name + "'", 1,
                name);
  }
  if (entry->signature != signature) {
    throw Error(ErrorKind::InvalidArgument,
                "kernel '" + name + "' in " + entry->plugin_name + " has signature " +
                    entry->signature + ", not " + signature,
                1, name);
  }
}

}  // namespace dj::detail
