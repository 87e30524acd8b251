"""convnet: how small and fast can a conv/pool/dense image classifier be before accuracy suffers?

Importing the package has no side effects; import the modules you need, e.g.
``from convnet import models, input_pipeline, train``.
"""

__version__ = "0.1.0"
