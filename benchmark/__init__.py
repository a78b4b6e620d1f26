"""rnnbench: benchmark recurrent networks on sequential MNIST and binary addition.

Example: rnnbench train --task addition --arch lstm
"""

__version__ = "0.1.0"
