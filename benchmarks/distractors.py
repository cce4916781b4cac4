"""How the synthetic distractors compare with real LFW descriptors (the fit of index/synthetic.py).

    .venv/bin/python -m benchmarks.distractors

Fits the distractor model on the cached LFW descriptors (benchmarks/lfw_descriptors.py), draws as
many synthetic rows, and prints the distance statistics of real and synthetic pairs side by side.
"""

from __future__ import annotations

import numpy as np

from benchmarks import lfw_descriptors
from index.synthetic import compare, fit, generate


def main() -> None:
    real, identities, _ = lfw_descriptors.load()
    model = fit(real, identities, source=f"LFW, {len(real)} photos, dlib HOG upsample 1, largest face")
    synthetic = generate(model, len(real), seed=1)
    print(f"fitted on {model.fitted_on}; photos per synthetic identity: {model.photos_per_identity}")
    for name, stats in compare(real, identities, synthetic, np.random.default_rng(0)).items():
        print(f"{name:40s} " + "  ".join(f"{k} {v:.3f}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
