"""The gallery: build from a dataset folder, on-disk store, exact search kernels."""
