// SharedArray on the master (creating a segment, mapping it on every participant, unlinking it,
// releasing it) and in any process (its descriptor's encoding and attaching to a mapping).
#include "shared_arrays.hpp"

#include <unistd.h>

#include <cstdint>

#include "cluster.hpp"
#include "identity.hpp"
#include "sys.hpp"

namespace dj {

IndexRange split_range(size_t length, size_t parts, size_t index) {
  if (index == 0 || index > parts) return {};
  if (length < parts) return index <= length ? IndexRange{index - 1, index} : IndexRange{};
  size_t share = length / parts;
  return {(index - 1) * share, index == parts ? length : index * share};
}

namespace detail {

// Initial-exec: libdj is loaded with the program (never dlopen'ed), so its thread-locals sit in
// the static TLS block and are reached without a __tls_get_addr call (set around every kernel).
__attribute__((tls_model("initial-exec"))) constinit thread_local SegmentTable* t_segments =
    nullptr;

namespace {

std::string shape_text(const std::vector<size_t>& dims) {
  std::string s;
  for (size_t d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s.empty() ? "()" : s;
}

std::string pid_list(const std::vector<int>& pids) {
  std::string s;
  for (int p : pids) s += (s.empty() ? "" : ", ") + std::to_string(p);
  return s;
}

// Number of elements and bytes of `dims`. Throws InvalidArgument naming the array.
std::pair<size_t, size_t> extent(const std::vector<size_t>& dims, size_t element_bytes,
                                 const std::string& what) {
  if (dims.empty() || dims.size() > 3) {
    throw Error(ErrorKind::InvalidArgument, what + ": a SharedArray has 1 to 3 dimensions, not " +
                                                std::to_string(dims.size()));
  }
  size_t length = 1;
  for (size_t d : dims) {
    if (d != 0 && length > SIZE_MAX / d) {
      throw Error(ErrorKind::InvalidArgument, what + ": the element count overflows");
    }
    length *= d;
  }
  if (length > SIZE_MAX / element_bytes) {
    throw Error(ErrorKind::InvalidArgument, what + ": the size in bytes overflows");
  }
  return {length, length * element_bytes};
}

}  // namespace


std::vector<std::shared_ptr<WorkerLink>> Cluster::shared_participants(
    std::vector<int>& pids, const std::string& what) const {
  const std::string here = host_identity();
  std::vector<std::shared_ptr<WorkerLink>> links;
  std::lock_guard lock(mu_);
  if (pids.empty()) {  // Julia's default: the workers on this host, or the master alone.
    for (const auto& [pid, link] : links_) {
      if (link->host_identity == here) {
        pids.push_back(pid);
        links.push_back(link);
      }
    }
    if (pids.empty()) pids.push_back(1);
    return links;
  }
  for (size_t i = 0; i < pids.size(); ++i) {
    int pid = pids[i];
    for (size_t j = 0; j < i; ++j) {
      if (pids[j] == pid) {
        throw Error(ErrorKind::InvalidArgument,
                    what + ": pid " + std::to_string(pid) + " is listed twice", pid);
      }
    }
    if (pid == 1) continue;
    auto link = find_locked(pid);
    if (link->host_identity != here) {
      throw Error(ErrorKind::InvalidArgument,
                  what + ": worker " + std::to_string(pid) + " (os pid " +
                      std::to_string(link->info.os_pid) + " on host " + link->info.host +
                      ", host identity " + link->host_identity +
                      ") does not share memory with the master (host " + host_name() +
                      ", host identity " + here +
                      "); a SharedArray's pids must be on the master's host",
                  pid);
    }
    links.push_back(link);
  }
  return links;
}

std::shared_ptr<const SharedState> Cluster::create_shared(const std::string& element,
                                                          size_t element_bytes,
                                                          std::vector<size_t> dims,
                                                          std::vector<int> pids) {
  std::string what = "SharedArray{" + element + "}(" + shape_text(dims) + ")";
  auto [length, bytes] = extent(dims, element_bytes, what);
  auto links = shared_participants(pids, what);

  std::string name =
      "/dj-" + std::to_string(::getpid()) + "-" + std::to_string(next_segment_.fetch_add(1));
  std::unique_ptr<Segment> segment = Segment::create(name, bytes, what);

  std::vector<std::shared_ptr<Reply>> replies;
  for (const auto& link : links) {
    uint64_t id;
    {
      std::lock_guard lock(mu_);
      id = next_id_locked();
    }
    replies.push_back(request(link, wire::MapShared{id, name, bytes}, id));
  }
  std::vector<int> mapped;
  std::string failures;
  ErrorKind kind = ErrorKind::Internal;
  for (size_t i = 0; i < links.size(); ++i) {
    const wire::Message& m = replies[i]->wait();  // Completed with an error if it dies.
    const wire::RemoteError* e = nullptr;
    if (const auto* r = std::get_if<wire::Result>(&m)) e = &r->error;
    if (const auto* r = std::get_if<wire::SharedMapped>(&m)) {
      if (r->ok) mapped.push_back(links[i]->pid);
      else e = &r->error;
    }
    if (e) {
      failures += (failures.empty() ? "" : "; ") + e->message;
      kind = e->kind;
    }
  }
  // Every participant has mapped it (or failed): from here no crash can leave it in /dev/shm.
  segment->unlink();
  if (!failures.empty()) {
    unmap_shared(name, mapped);
    throw Error(kind, what + " could not be mapped on every pid: " + failures);
  }

  std::vector<int> worker_pids;
  for (const auto& link : links) worker_pids.push_back(link->pid);
  auto* raw = segment.release();
  std::shared_ptr<Segment> mapping(raw, [name, worker_pids](Segment* s) {
    if (Cluster* c = Cluster::existing()) c->unmap_shared(name, worker_pids);
    delete s;
  });
  segments_.watch(name, mapping);

  auto state = std::make_shared<SharedState>();
  state->name = name;
  state->element = element;
  state->dims = std::move(dims);
  state->pids = std::move(pids);
  state->host_identity = host_identity();
  state->data = mapping->data();
  state->length = length;
  state->mapping = std::move(mapping);
  return state;
}

void Cluster::unmap_shared(const std::string& name, const std::vector<int>& pids) noexcept {
  for (int pid : pids) {
    std::shared_ptr<WorkerLink> link;
    {
      std::lock_guard lock(mu_);
      auto it = links_.find(pid);
      if (it == links_.end()) continue;  // Its mapping died with it.
      link = it->second;
    }
    link->send(wire::UnmapShared{name});
  }
}

std::shared_ptr<const SharedState> shared_create(const std::string& element, size_t element_bytes,
                                                 std::vector<size_t> dims, std::vector<int> pids) {
  return Cluster::instance().create_shared(element, element_bytes, std::move(dims),
                                           std::move(pids));
}

void shared_write(ser::Writer& w, const std::shared_ptr<const SharedState>& state) {
  if (!state) throw Error(ErrorKind::InvalidArgument, "dj: cannot pass an empty SharedArray");
  std::vector<uint64_t> dims(state->dims.begin(), state->dims.end());
  std::vector<int32_t> pids(state->pids.begin(), state->pids.end());
  ser::Codec<std::string>::write(w, state->name);
  ser::Codec<std::string>::write(w, state->element);
  ser::Codec<std::vector<uint64_t>>::write(w, dims);
  ser::Codec<std::vector<int32_t>>::write(w, pids);
  ser::Codec<std::string>::write(w, state->host_identity);
}

std::shared_ptr<const SharedState> shared_read(ser::Reader& r, const std::string& element,
                                               size_t element_bytes) {
  auto state = std::make_shared<SharedState>();
  state->name = ser::Codec<std::string>::read(r);
  state->element = ser::Codec<std::string>::read(r);
  auto dims = ser::Codec<std::vector<uint64_t>>::read(r);
  auto pids = ser::Codec<std::vector<int32_t>>::read(r);
  state->host_identity = ser::Codec<std::string>::read(r);
  state->dims.assign(dims.begin(), dims.end());
  state->pids.assign(pids.begin(), pids.end());
  const std::string who = myid() == 1 ? "the master" : "worker " + std::to_string(myid());
  const std::string what = "SharedArray " + state->name;
  if (state->element != element) {
    throw Error(ErrorKind::InvalidArgument, what + " holds " + state->element + ", not " + element);
  }
  if (state->host_identity != host_identity()) {
    throw Error(ErrorKind::InvalidArgument,
                what + " lives in the memory of host " + state->host_identity + ", but " + who +
                    " runs on host " + host_name() + " (" + host_identity() + ")");
  }
  auto [length, bytes] = extent(state->dims, element_bytes, what);
  SegmentTable* table = t_segments;
  if (!table && myid() == 1) table = &Cluster::instance().segments();
  auto mapping = table ? table->find(state->name) : nullptr;
  if (!mapping) {
    throw Error(ErrorKind::NotFound,
                what + " is not mapped on " + who + " (its pids are " + pid_list(state->pids) +
                    (myid() == 1 ? "; the master holds no handle to it any more)" : ")"));
  }
  if (mapping->bytes() != bytes) {
    throw Error(ErrorKind::InvalidArgument, what + " of " + std::to_string(bytes) +
                                                " bytes does not match its mapping of " +
                                                std::to_string(mapping->bytes()));
  }
  state->data = mapping->data();
  state->length = length;
  state->mapping = std::move(mapping);
  return state;
}

}  // namespace detail
}  // namespace dj
