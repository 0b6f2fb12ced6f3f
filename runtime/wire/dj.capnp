@0x968816adad4ac721;
# The whole dj wire protocol. Every frame on every dj connection carries exactly one `Message`
# (see frame.hpp for the 16-byte prefix). Bulk bytes (call arguments, results, plugin images)
# ride in the frame's payload, after the message, so they are never copied into a Cap'n Proto
# builder and are not bounded by Cap'n Proto's traversal limit.
#
# Conventions: `pid` fields are dj pids (master = 1, workers >= 2), never OS pids unless named
# `osPid`. A receiver that gets a message it does not expect in its state logs it and drops the
# connection (a protocol violation never leaves a half-understood state behind).

$import "/capnp/c++.capnp".namespace("dj::wire::schema");

enum ErrorKind {
  # Mirrors dj::ErrorKind; each kind maps to one recovery action (see dj/error.hpp).
  invalidArgument @0;
  notFound @1;
  remoteFailure @2;
  disconnected @3;
  resourceExhausted @4;
  internal @5;
  cancelled @6;
}

struct RemoteError {
  # An error crossing the wire; the master rebuilds a dj::Error of the same kind from it.
  kind @0 :ErrorKind;
  message @1 :Text;      # Human-readable, already naming the thing and the problem.
  worker @2 :Int32;      # dj pid where it happened; 0 when not tied to a process.
  kernel @3 :Text;       # Kernel name, empty when not tied to a kernel.
}

enum CallMode {
  store @0;    # remotecall/spawnat: keep the result on the worker under `refId`, reply CallDone.
  fetch @1;    # remotecall_fetch: reply Result with the value, keep nothing.
  discard @2;  # remote_do: reply nothing; failures are printed on the worker's stderr.
  batch @3;    # pmap: the payload holds `batchCount` argument lists (each u64 length + list);
               # the kernel runs on each in order and Result's payload holds one outcome per
               # element (u8 ok, u64 length, encoded value or error text). An element's failure
               # does not stop the others.
}

struct Hello {
  # First frame of every connection, sent by the connecting side. A receiver that does not get a
  # Hello with the right cookie within its handshake deadline logs one line and closes.
  cookie @0 :Data;       # The per-cluster secret (never on a command line or in the environment).
  pid @1 :Int32;         # dj pid the connecting side assigns to the receiver (master -> worker).
  senderPid @2 :Int32;   # dj pid of the connecting side.
  protocol @3 :UInt32;   # kProtocolVersion; a mismatch is refused with an error naming both.
}

struct Welcome {
  # The worker's answer to a valid Hello from the master.
  pid @0 :Int32;
  osPid @1 :Int64;
  hostname @2 :Text;
  bootId @3 :Text;       # /proc/sys/kernel/random/boot_id + /dev/shm device: same-host test.
}

struct LoadPlugin {
  # Payload: the plugin's shared-object bytes. The worker checks sha256(payload) == sha256 before
  # writing a single byte anywhere; a mismatch is refused.
  requestId @0 :UInt64;
  name @1 :Text;         # File name on the master, for error messages only.
  sha256 @2 :Data;
}

struct PluginLoaded {
  requestId @0 :UInt64;
  ok @1 :Bool;
  error @2 :RemoteError; # Set when ok is false.
  kernelCount @3 :UInt32;
  alreadyLoaded @4 :Bool;  # Same bytes were loaded before: nothing was done.
}

struct Call {
  # Payload: the encoded argument tuple (dj/serialize.hpp, each argument tagged value or ref).
  requestId @0 :UInt64;  # Correlates Result (fetch mode); 0 in other modes.
  refId @1 :UInt64;      # Where a store-mode result is kept; 0 in other modes.
  kernelId @2 :UInt64;   # fnv1a64(kernel name), resolved to a registry entry once per call.
  kernelName @3 :Text;   # For error messages only; never used for dispatch.
  signature @4 :Text;    # Caller's view "(arg types)->result"; must equal the registered one.
  mode @5 :CallMode;
  batchCount @6 :UInt32;  # Batch mode only.
  chunkOp @7 :ChunkOp;  # none: an ordinary call.
}

enum ChunkOp {
  # DArray operations that run where a chunk lives. A chunk is an encoded vec<T>, usually a ref
  # to a value the worker owns. With a kernel, T is its first argument type in `signature`;
  # the built-in ones (kernelId 0) carry "(T)" as `signature`.
  none @0;
  map @1;     # args (chunk); kernel (T)->U on every element; result: the vec<U> of the outputs.
  reduce @2;  # args (chunk); kernel (T,T)->T folds the elements in order; empty chunk: error.
  slice @3;   # built-in; args (chunk, u64 first, u64 count); result: vec<T> of those elements.
  sum @4;     # built-in, arithmetic T; args (chunk); result: T, the sum (0 for an empty chunk).
  fill @5;    # built-in; args (u64 count, T value); result: vec<T> of count copies.
  rand @6;    # built-in, T = f64; args (u64 count, u64 seed); result: vec<f64> uniform in [0,1).
  length @7;  # built-in; args (chunk); result: u64, its element count.
}

struct CallDone {
  # Store-mode completion. The value itself stays on the worker until released. Payload: a copy
  # of the encoded value when it is small (<= kInlineResultBytes), so that fetch needs no round
  # trip; empty otherwise (the master fetches it when asked).
  refId @0 :UInt64;
  ok @1 :Bool;
  error @2 :RemoteError;
}

struct Result {
  # Answer to a fetch-mode Call, a Fetch or a FetchRef. Payload: the encoded value when ok.
  requestId @0 :UInt64;
  ok @1 :Bool;
  error @2 :RemoteError;
}

struct Fetch {
  # Master -> owner: send the value of refId (answered by Result with the same requestId).
  requestId @0 :UInt64;
  refId @1 :UInt64;
}

struct FetchRef {
  # Worker -> master: a call argument lives on another process; the master fetches it from the
  # owner and answers with Result(requestId).
  requestId @0 :UInt64;
  owner @1 :Int32;
  refId @2 :UInt64;
}

struct Release {
  # Master -> owner: the last handle to refId is gone; free it (unknown ids are ignored).
  refId @0 :UInt64;
}

struct StatsRequest {
  requestId @0 :UInt64;
}

struct StatsReply {
  requestId @0 :UInt64;
  storedValues @1 :UInt64;
  storedBytes @2 :UInt64;
  rssBytes @3 :UInt64;
  loadedPlugins @4 :UInt32;
}

struct Shutdown {
  # Master -> worker: finish the running kernel if any, then exit(0). No reply; the master
  # watches the process and kills it after its grace period.
  reason @0 :Text;
}

struct Interrupt {
  # Master -> worker: cancel the running kernel (dj::interrupted() turns true inside it) and
  # every queued call; each fails with kind `cancelled`. No reply: the calls' own replies say it.
}

enum ChannelOpKind {
  create @0;   # new channel of `capacity` items on `owner`; Result payload: u64 channel id
  put @1;      # payload: the item; blocks (on the owner) while the channel is full
  take @2;     # Result payload: the item, removed
  fetch @3;    # Result payload: the head item, left in place
  isReady @4;  # Result payload: one byte, 1 if an item is there
  close @5;    # wakes every waiter with an error; items already in can still be taken
  wait @6;     # completes when an item is there
  release @7;  # the last master handle is gone: free it
}

struct ChannelOp {
  # A RemoteChannel operation, answered by Result(requestId). Master -> owner directly; a
  # worker sends it to the master, which relays it to `owner` (or serves it, owner 1) and
  # relays the answer. If the owner dies, the answer is a `disconnected` error.
  requestId @0 :UInt64;
  owner @1 :Int32;
  channelId @2 :UInt64;   # 0 for create
  op @3 :ChannelOpKind;
  timeoutMs @4 :Int64;    # -1: no deadline. On expiry the owner answers `cancelled`.
  capacity @5 :UInt64;    # create only
}

struct MapShared {
  # Master -> worker: map the SharedArray segment `name` (created by the master, 0600) and keep
  # the mapping until UnmapShared. Answered by SharedMapped. The master unlinks the name once
  # every participant answered, so the worker must map it now, not lazily.
  requestId @0 :UInt64;
  name @1 :Text;         # POSIX shm name "/dj-<master os pid>-<n>".
  bytes @2 :UInt64;      # Segment size; a segment of another size is refused (not mapped).
}

struct SharedMapped {
  # Worker -> master: answer to MapShared. When ok is false nothing was mapped.
  requestId @0 :UInt64;
  ok @1 :Bool;
  error @2 :RemoteError; # Set when ok is false.
}

struct UnmapShared {
  # Master -> worker: the master's last handle to the SharedArray `name` is gone (and no call
  # that carries it is in flight): drop the mapping. Copies a kernel still holds keep the memory
  # until they are destroyed. An unknown name is ignored. No reply.
  name @0 :Text;
}

struct StoreValue {
  # Master -> worker: keep the payload (an encoded value) under refId, as if a call had
  # computed it (Cached arguments). Answered by CallDone(refId).
  refId @0 :UInt64;
}

struct Peer {
  # Where another worker listens, for direct worker-to-worker connections.
  pid @0 :Int32;
  address @1 :Text;       # HOST:PORT (TCP), for a worker on another host.
  unixName @2 :Text;      # Abstract Unix socket name, for a worker on the same host.
  hostIdentity @3 :Text;  # Same value as Welcome.bootId: decides which of the two to use.
}

struct Peers {
  # Master -> worker (topology all_to_all only): the other workers it may connect to, sent when
  # it joins (all of them) and when workers join later (the new ones). A worker connects to a
  # peer lazily, the first time it needs a value or a channel that peer owns, with a Hello
  # {cookie, pid: the peer's pid, senderPid: its own}; over that connection it sends Fetch and
  # ChannelOp requests and the peer answers with Result. Peers missing from the list (tunnelled
  # workers) are reached through the master.
  entries @0 :List(Peer);  # At most 1024 per message (kMaxPeersPerMessage); more: several.
}

struct Ping {
  # Master -> worker, only while the master waits for something from it: answered at once by
  # Pong with the same seq (the worker's reader role is never held by a kernel for long). A
  # worker that stays silent past the heartbeat timeout is stopped or hung: it is killed and
  # reported lost.
  seq @0 :UInt64;
}

struct Pong {
  seq @0 :UInt64;
}

struct BulkFree {
  # Either way on a same-host connection: the receiver of a bulk frame (a payload lent through
  # the sender's shared memory, see runtime/wire/bulk.hpp) has read it and unmapped it; the
  # sender may reuse its memory. Until then the sender sends large payloads through the socket.
  # A token that is not the one lent out is ignored.
  token @0 :UInt64;
}

struct RingOffer {
  # Master -> a worker on the same host, once, right after Welcome: from now on every frame
  # goes through shared memory (runtime/wire/ring.hpp), not through the socket. Sent with three
  # descriptors (SCM_RIGHTS): the memfd holding both rings, the worker's doorbell and the
  # master's doorbell (eventfds). The worker maps it and answers RingReady on the socket; each
  # side then writes only to its ring, and the socket carries nothing but one byte with the
  # descriptor of each bulk frame, and the end of the connection. A worker that cannot map it
  # answers RingReady with ok = false and the socket stays the connection.
  ringBytes @0 :UInt64;  # capacity of each ring (a power of two)
}

struct RingReady {
  ok @0 :Bool;
  error @1 :Text;
}

struct Message {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    loadPlugin @2 :LoadPlugin;
    pluginLoaded @3 :PluginLoaded;
    call @4 :Call;
    callDone @5 :CallDone;
    result @6 :Result;
    fetch @7 :Fetch;
    fetchRef @8 :FetchRef;
    release @9 :Release;
    statsRequest @10 :StatsRequest;
    statsReply @11 :StatsReply;
    shutdown @12 :Shutdown;
    refused @13 :RemoteError;  # Handshake refused (bad protocol version); then the peer closes.
    interrupt @14 :Interrupt;
    channelOp @15 :ChannelOp;
    mapShared @16 :MapShared;
    sharedMapped @17 :SharedMapped;
    unmapShared @18 :UnmapShared;
    storeValue @19 :StoreValue;
    peers @20 :Peers;
    ping @21 :Ping;
    pong @22 :Pong;
    bulkFree @23 :BulkFree;
    ringOffer @24 :RingOffer;
    ringReady @25 :RingReady;
  }
}
