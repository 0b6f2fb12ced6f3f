/* The binary interface between dj and a kernel plugin: a plugin is a shared object exporting
 * one C function, DJ_PLUGIN_SYMBOL, that returns a table of kernels. C types only, so that the
 * table can be checked before any of the plugin's C++ is trusted. Plugin authors never write
 * this by hand: DJ_PLUGIN in dj/kernel.hpp builds it. */
#ifndef DJ_PLUGIN_ABI_H
#define DJ_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever any struct below or the argument encoding changes. A plugin built with a
 * different value is refused with an error naming both versions. */
#define DJ_PLUGIN_ABI_VERSION 2u
#define DJ_PLUGIN_SYMBOL "dj_plugin_descriptor_v1"

/* One encoded argument (dj/serialize.hpp), owned by the caller for the duration of the call. */
typedef struct dj_arg {
  const unsigned char* data;
  size_t size;
} dj_arg;

/* Where a kernel puts its result. `reserve` returns a buffer of exactly `bytes` bytes for the
 * encoded result (at most once per call); `fail` records an error message instead. */
typedef struct dj_sink {
  void* ctx;
  unsigned char* (*reserve)(void* ctx, size_t bytes);
  void (*fail)(void* ctx, const char* message);
} dj_sink;

/* Decodes the arguments, runs the kernel and reports through the sink. Never throws. */
typedef void (*dj_invoke_fn)(const dj_arg* args, size_t nargs, dj_sink* sink);

/* The same-host fast path's entry, for a kernel whose parameters and result are numbers (or a
 * void result). `blob` holds the arguments as a call carries them: a uint32 count, then for
 * each argument a tag byte 0, its size as a uint64 and its encoded value, all little-endian
 * and unaligned. If the blob is exactly that, for this kernel's count and types, the kernel
 * runs and its encoded result (the size of its type, 0 for void) is written at `out`, which
 * has room for 16 bytes: returns the result's size, or -2 if the kernel threw (the message
 * went to sink->fail, and nothing is written at out). Otherwise returns -1 and runs nothing;
 * the caller then uses `invoke`. Never throws. */
typedef long (*dj_invoke_numbers_fn)(const unsigned char* blob, size_t size, unsigned char* out,
                                     dj_sink* sink);

typedef struct dj_kernel_entry {
  const char* name;      /* C identifier of the kernel. */
  const char* signature; /* "(f64,f64)->f64": argument and result types, see serialize.hpp. */
  dj_invoke_fn invoke;
  dj_invoke_numbers_fn invoke_numbers; /* NULL unless the kernel takes and returns numbers */
} dj_kernel_entry;

typedef struct dj_plugin_descriptor {
  uint32_t abi_version; /* DJ_PLUGIN_ABI_VERSION the plugin was built with. */
  uint32_t kernel_count;
  const char* plugin_name;
  const dj_kernel_entry* kernels;
} dj_plugin_descriptor;

typedef const dj_plugin_descriptor* (*dj_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* DJ_PLUGIN_ABI_H */
