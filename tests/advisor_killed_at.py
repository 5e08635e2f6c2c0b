"""netdrops-advisor, SIGKILLed at one of apply.execute()'s named checkpoints, for the crash tests:
`python3 tests/advisor_killed_at.py POINT ARGS...` runs `netdrops-advisor ARGS...` and kills
itself when execute() reaches POINT (after-snapshot, after-write-N, after-file). The product's
checkpoints do nothing; only this process replaces them."""

import os
import signal
import sys

from netdrops_advisor.apply import plan as apply
from netdrops_advisor import cli


def main(argv):
    point, args = argv[0], argv[1:]

    def kill_at(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    apply.checkpoint = kill_at
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
