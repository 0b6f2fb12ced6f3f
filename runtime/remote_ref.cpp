// Completion and release of remote values and replies on the master.
#include "remote_ref.hpp"

#include "cluster.hpp"

namespace dj::detail {

RefState::~RefState() {
  if (Cluster* c = Cluster::existing()) c->release(owner, id);
}

void RefState::complete(bool ok, wire::RemoteError e, std::optional<std::string> copy) {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mu);
    if (status != RefStatus::kPending) return;
    status = ok ? RefStatus::kReady : RefStatus::kFailed;
    if (!ok) error = std::move(e);
    if (ok) value = std::move(copy);
    callbacks.swap(on_ready);
    cv.notify_all();
  }
  for (auto& f : callbacks) f();
}

void RefState::wait() const {
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return status != RefStatus::kPending; });
  if (status == RefStatus::kFailed) throw to_error(error);
}

void Reply::complete(wire::Message m, std::string bytes, std::shared_ptr<wire::BulkPayload> lent) {
  {
    std::lock_guard lock(mu);
    if (done) return;
    message = std::move(m);
    payload = std::move(bytes);
    bulk = std::move(lent);
    done = true;
    cv.notify_all();
  }
  if (then) then(*this);
}

const wire::Message& Reply::wait() {
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done; });
  return message;
}

Error to_error(const wire::RemoteError& e) { return Error(e.kind, e.message, e.worker, e.kernel); }

}  // namespace dj::detail
