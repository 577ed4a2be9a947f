"""canonc's model zoo for tests, benchmarks and the demo.

``load(name)`` serves the ``models:NAME`` model source: torchvision classifiers with
randomized BN, and the ``NAME-shapes`` topologies trained on the shapes benchmark
(:mod:`models.shapes`); ``randomize_bn`` gives BN layers realistic, non-identity statistics
(DESIGN.md §5).
"""

from .zoo import load, randomize_bn

__all__ = ["load", "randomize_bn"]
