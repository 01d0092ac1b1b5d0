"""Power-cut trials: a FUSE pass-through filesystem that knows what is durable (``simfs``), a
controller for tests (``harness``), and the trials themselves (``test_powercut``)."""
