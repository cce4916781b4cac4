// Empty bind functions for the dlib 20.0.1 Python binding files that faces/fast_dlib.py leaves out
// of the kiosk's fast build (face_bindings.cmake): dlib.cpp's module init still calls each of them.
// The module says so in dlib.MEGAPIXELS_FACE_BINDINGS_ONLY.
#include <pybind11/pybind11.h>

namespace py = pybind11;

#define MEGAPIXELS_LEFT_OUT(name) \
    void name(py::module&) {}

MEGAPIXELS_LEFT_OUT(bind_other)
MEGAPIXELS_LEFT_OUT(bind_line)
MEGAPIXELS_LEFT_OUT(bind_svm_rank_trainer)
MEGAPIXELS_LEFT_OUT(bind_decision_functions)
MEGAPIXELS_LEFT_OUT(bind_cca)
MEGAPIXELS_LEFT_OUT(bind_sequence_segmenter)
MEGAPIXELS_LEFT_OUT(bind_svm_struct)
MEGAPIXELS_LEFT_OUT(bind_image_classes)
MEGAPIXELS_LEFT_OUT(bind_image_classes2)
MEGAPIXELS_LEFT_OUT(bind_image_classes3)
MEGAPIXELS_LEFT_OUT(bind_image_classes4)
MEGAPIXELS_LEFT_OUT(bind_correlation_tracker)
MEGAPIXELS_LEFT_OUT(bind_global_optimization)
MEGAPIXELS_LEFT_OUT(bind_image_dataset_metadata)

// Called last but one by the module init, so it also marks the module.
void bind_svm_c_trainer(py::module& m)
{
    m.attr("MEGAPIXELS_FACE_BINDINGS_ONLY") = true;
}
