// For plugin authors: write kernels as ordinary C++ functions and list them once.
//
//   #include <dj/kernel.hpp>
//   double add(double a, double b) { return a + b; }
//   std::vector<double> scale(const std::vector<double>& v, double k) { ... }
//   DJ_PLUGIN("my_kernels", DJ_KERNEL(add), DJ_KERNEL(scale))
//
// and build it with `dj_add_kernel(my_kernels my_kernels.cpp)` in CMake. Kernels take
// arguments by value or const reference, in any type dj/serialize.hpp supports (and
// dj::ArrayView<T>, dj/array_view.hpp, to read a large array in place), and return such a type
// or void. An exception thrown by a kernel reaches the caller as a RemoteFailure
// carrying its what() text. Inside a kernel, dj::myid() is the pid of the running process.
#pragma once

#include <cstdio>
#include <cstring>
#include <exception>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dj/array_view.hpp"
#include "dj/channel.hpp"
#include "dj/plugin_abi.h"
#include "dj/serialize.hpp"
#include "dj/shared_array.hpp"

namespace dj {

// dj pid of this process: 1 on the master, >= 2 on workers.
int myid();

// Whether interrupt() asked the running kernel to stop. Cheap (an atomic load): check it in
// long loops and return early. A kernel that never checks is stopped by replacing its worker.
bool interrupted() noexcept;
// Throws dj::Error(Cancelled) if interrupted(); the call then fails with kind Cancelled.
void check_interrupt();

namespace detail {

template <class F>
struct KernelTraits;
template <class R, class... A>
struct KernelTraits<R (*)(A...)> {
  using Result = R;
  using Args = std::tuple<std::decay_t<A>...>;
  static const std::string& signature() { return ser::call_signature<R, std::decay_t<A>...>(); }
};

// The call's bytes outlive the kernel: an ArrayView argument reads them in place.
template <class T>
T decode_arg(const dj_arg& arg) {
  ser::Reader r(arg.data, arg.size);
  r.borrow();
  return ser::read_whole<T>(r);
}

template <class Args, size_t... I>
Args decode_args(const dj_arg* args, std::index_sequence<I...>) {
  return Args{decode_arg<std::tuple_element_t<I, Args>>(args[I])...};
}

template <auto Fn>
void invoke_kernel(const dj_arg* args, size_t nargs, dj_sink* sink) noexcept {
  using Traits = KernelTraits<decltype(Fn)>;
  using Args = typename Traits::Args;
  using R = typename Traits::Result;
  constexpr size_t kArity = std::tuple_size_v<Args>;
  try {
    if (nargs != kArity) {
      throw Error(ErrorKind::InvalidArgument, "expected " + std::to_string(kArity) +
                                                  " arguments, got " + std::to_string(nargs));
    }
    Args decoded = decode_args<Args>(args, std::make_index_sequence<kArity>{});
    if constexpr (std::is_void_v<R>) {
      std::apply(Fn, std::move(decoded));
      sink->reserve(sink->ctx, 0);
    } else {
      R result = std::apply(Fn, std::move(decoded));
      ser::Writer counter;
      ser::Codec<R>::write(counter, result);
      unsigned char* out = sink->reserve(sink->ctx, counter.size());
      ser::Writer writer(out);
      ser::Codec<R>::write(writer, result);
    }
  } catch (const std::exception& e) {
    sink->fail(sink->ctx, e.what());
  } catch (...) {
    sink->fail(sink->ctx, "kernel threw an exception that is not a std::exception");
  }
}

// The numbers-only entry (dj_invoke_numbers_fn): for kernels whose parameters are numbers
// and whose result is a number or void, the blob is checked against its one possible layout
// and the values are copied out of it, with no Reader, no sink buffer and no second pass.
template <class R, class Args>
struct TakesNumbers : std::false_type {};
template <class R, class... A>
struct TakesNumbers<R, std::tuple<A...>>
    : std::bool_constant<(std::is_void_v<R> || std::is_arithmetic_v<R>) &&
                         (std::is_arithmetic_v<A> && ...)> {};

// One argument of the blob: tag 0, its size, then its value. Advances `at`.
template <class A>
bool read_number(const unsigned char*& at, A& value) {
  uint64_t bytes;
  std::memcpy(&bytes, at + 1, 8);
  if (at[0] != 0 || bytes != sizeof(A)) return false;
  if constexpr (std::is_same_v<A, bool>) value = at[9] != 0;  // as Codec<bool> reads it
  else std::memcpy(&value, at + 9, sizeof(A));
  at += 9 + sizeof(A);
  return true;
}

template <auto Fn>
long invoke_numbers(const unsigned char* blob, size_t size, unsigned char* out,
                    dj_sink* sink) noexcept {
  using Traits = KernelTraits<decltype(Fn)>;
  using Args = typename Traits::Args;
  using R = typename Traits::Result;
  constexpr size_t kBytes = std::apply(
      [](auto... a) { return size_t{4} + (size_t{0} + ... + (9 + sizeof(a))); }, Args{});
  uint32_t count;
  if (size != kBytes) return -1;
  std::memcpy(&count, blob, 4);
  if (count != std::tuple_size_v<Args>) return -1;
  Args values;
  const unsigned char* at = blob + 4;
  if (!std::apply([&](auto&... v) { return (read_number(at, v) && ...); }, values)) return -1;
  (void)at;  // unused by kernels without arguments
  try {
    if constexpr (std::is_void_v<R>) {
      std::apply(Fn, values);
      return 0;
    } else {
      static_assert(sizeof(R) <= 16, "dj_invoke_numbers_fn results fit 16 bytes");
      const R result = std::apply(Fn, values);
      std::memcpy(out, &result, sizeof(R));
      return static_cast<long>(sizeof(R));
    }
  } catch (const std::exception& e) {
    sink->fail(sink->ctx, e.what());
  } catch (...) {
    sink->fail(sink->ctx, "kernel threw an exception that is not a std::exception");
  }
  return -2;
}

template <auto Fn>
dj_kernel_entry make_kernel_entry(const char* name) {
  using Traits = KernelTraits<decltype(Fn)>;
  dj_invoke_numbers_fn numbers = nullptr;
  if constexpr (TakesNumbers<typename Traits::Result, typename Traits::Args>::value) {
    numbers = &invoke_numbers<Fn>;
  }
  return dj_kernel_entry{name, Traits::signature().c_str(), &invoke_kernel<Fn>, numbers};
}

}  // namespace detail
}  // namespace dj

// One kernel entry for DJ_PLUGIN: the function's name is the kernel's name.
#define DJ_KERNEL(fn) ::dj::detail::make_kernel_entry<&fn>(#fn)

// Defines the plugin's one exported descriptor (see dj/plugin_abi.h). Use once per plugin.
// The table is built when dj first asks for it, never at static-initialisation time.
#define DJ_PLUGIN(plugin_name, ...)                                                     \
  extern "C" __attribute__((visibility("default"))) const dj_plugin_descriptor*         \
  dj_plugin_descriptor_v1(void) {                                                       \
    static const dj_kernel_entry dj_entries_[] = {__VA_ARGS__};                         \
    static const dj_plugin_descriptor dj_descriptor_ = {                                \
        DJ_PLUGIN_ABI_VERSION, static_cast<uint32_t>(sizeof dj_entries_ / sizeof dj_entries_[0]), \
        plugin_name, dj_entries_};                                                      \
    return &dj_descriptor_;                                                             \
  }
