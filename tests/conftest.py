"""Suite-wide environment: the state a user's shell gives the programs the tests start."""

from __future__ import annotations

import signal

# A shell starts background jobs with SIGINT ignored (POSIX: asynchronous lists in a non-interactive
# shell), and an ignored disposition survives exec. A suite started that way (`make test &`, a CI
# runner) would hand every lamina it spawns an ignored SIGINT, and the Ctrl-C tests would see a
# program that never gets the signal. A user at a terminal gets the default: restore it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
