# dj_add_kernel(<name> <sources>...): builds a dj kernel plugin, lib<name>.so, from sources
# that use <dj/kernel.hpp> and DJ_PLUGIN(...). Load it with dj::everywhere("path/lib<name>.so").
function(dj_add_kernel name)
  add_library(${name} MODULE ${ARGN})
  if(TARGET dj::dj)
    target_link_libraries(${name} PRIVATE dj::dj)
  else()
    target_link_libraries(${name} PRIVATE dj)
  endif()
  # Kernels see only what DJ_PLUGIN exports; everything else stays private to the plugin.
  set_target_properties(${name} PROPERTIES CXX_VISIBILITY_PRESET hidden
                        CXX_STANDARD 20 CXX_STANDARD_REQUIRED ON PREFIX "lib")
endfunction()
