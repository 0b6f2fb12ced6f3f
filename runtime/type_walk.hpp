// Walking encoded values by their dj type name (dj/serialize.hpp's names: f64, str, vec<T>,
// arr<T,N>, tup<A,B>, mat<T>, Name{A,B}), without knowing the C++ type. This is what lets a
// worker run a DArray operation (map, reduce) element by element over a chunk it stores as an
// encoded vec<T>: it finds each element's bytes and hands them to the kernel.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dj::detail {

// Byte ranges of the elements of an encoded vec<element_type>, in order.
// Throws: InvalidArgument naming the problem (unknown type name, bytes that end early or run
// on past the last element).
std::vector<std::pair<const unsigned char*, size_t>> split_elements(std::string_view element_type,
                                                                   const unsigned char* data,
                                                                   size_t size);

// The type names of a signature "(A,B)->R": {A, B} and R. Throws: InvalidArgument.
std::pair<std::vector<std::string>, std::string> split_signature(std::string_view signature);

}  // namespace dj::detail
