# How faces/fast_dlib.py builds dlib's Python module (given to CMake as CMAKE_TOOLCHAIN_FILE; it
# names no compiler, so CMake still uses the system's). Two changes to dlib 20.0.1's own build,
# neither of which touches the code that finds, aligns or describes a face:
#
# 1. No link-time optimisation. dlib's tools/python/CMakeLists.txt means to switch it off (it
#    clears PYBIND11_LTO_CXX_FLAGS) but the pybind11 it bundles (2.12) sets that variable itself,
#    so every object carried -flto and all code generation happened in one final link step on
#    one core. pybind11 adds no LTO flags when CMAKE_INTERPROCEDURAL_OPTIMIZATION is defined.
# 2. Only the Python bindings the kiosk's face stack uses (face_bindings.cmake).
set(CMAKE_INTERPROCEDURAL_OPTIMIZATION OFF)
set(CMAKE_PROJECT_dlib_python_bindings_INCLUDE "${CMAKE_CURRENT_LIST_DIR}/face_bindings.cmake")
