import sys

from trailerlink_testing.kafka import _cli

sys.exit(_cli())
