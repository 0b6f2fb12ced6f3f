# find_package(dj) for plugin authors and master programs: gives dj::dj and dj_add_kernel().
include(CMakeFindDependencyMacro)
find_dependency(Threads)
include(${CMAKE_CURRENT_LIST_DIR}/djTargets.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/djKernel.cmake)
