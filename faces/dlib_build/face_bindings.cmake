# Included at the end of dlib's project(dlib_python_bindings) (see toolchain.cmake). Once
# tools/python/CMakeLists.txt has defined the _dlib_pybind11 module, its source list is cut to
# the files that bind what faces/ and face_recognition call (detectors, landmarks, chips,
# descriptors, and the types they take and return: rectangles, points, vectors); every other
# file's bind_*() function is replaced by an empty one (left_out_bindings.cpp). Those files were
# 60 % of the build's compile time (SVM trainers, optimisers, image filters, the GUI, ...).
# Every file that is compiled gets dlib's own flags. A dlib whose file list differs from 20.0.1's
# stops the build here (the caller then keeps the prebuilt dlib).
set(_megapixels_stubs "${CMAKE_CURRENT_LIST_DIR}/left_out_bindings.cpp")
set(_megapixels_kept dlib matrix vector basic rectangles object_detection shape_predictor
    face_recognition cnn_face_detector numpy_returns)
set(_megapixels_left_out other line svm_rank_trainer decision_functions cca sequence_segmenter
    svm_struct image image2 image3 image4 correlation_tracker global_optimization svm_c_trainer
    image_dataset_metadata)
# (gui.cpp is not in the list at all: fast_dlib.py builds with DLIB_NO_GUI_SUPPORT=ON, so dlib
# neither compiles it nor calls bind_gui.)

function(_megapixels_face_bindings_only)
  get_target_property(sources _dlib_pybind11 SOURCES)
  set(kept "")
  set(seen "")
  foreach(source IN LISTS sources)
    get_filename_component(name "${source}" NAME_WE)
    list(APPEND seen ${name})
    if(name IN_LIST _megapixels_kept)
      list(APPEND kept "${source}")
    elseif(NOT name IN_LIST _megapixels_left_out)
      message(FATAL_ERROR "megapixels: dlib source ${source} is neither kept nor left out; "
                          "face_bindings.cmake is written for dlib 20.0.1")
    endif()
  endforeach()
  foreach(name IN LISTS _megapixels_kept)
    if(NOT name IN_LIST seen)
      message(FATAL_ERROR "megapixels: dlib has no src/${name}.cpp; face_bindings.cmake is written for dlib 20.0.1")
    endif()
  endforeach()
  list(APPEND kept "${_megapixels_stubs}")
  set_property(TARGET _dlib_pybind11 PROPERTY SOURCES ${kept})
  list(LENGTH kept n)
  message(STATUS "megapixels: building the face bindings only (${n} source files)")
endfunction()

cmake_language(DEFER CALL _megapixels_face_bindings_only)
