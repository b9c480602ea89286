"""The exit codes of every `chargingd` command, in one place (docs/operations.md has the
table per command). A code means the same in every command that uses it, so a cron job
or a script can act on it without knowing which command ran:

  0   done
  1   refused or failed (the reason on stderr); `mediate`: the run completed but some
      rows were rejected (its rejects files)
  2   usage or configuration error, found before anything was done
  3   `assure` only: done, and some currency's leakage exceeds the threshold
  69  a service the command needs could not be reached (sysexits EX_UNAVAILABLE): the
      daemon's admin socket for `ctl` (missing, refused, no answer), Redis or the billing
      database for the others. Try again once it is back; never a finding.
  70  `mediate` only: the run failed part way for another reason (a Redis or database
      error, a file that cannot be read): rows before it are stored, a run again skips
      them as duplicates (sysexits EX_SOFTWARE; 1 is its "rows rejected")
  141 the reader of stdout went away (`... | head`): 128 + SIGPIPE

No imports: `chargingd ctl` loads this and the admin socket's client only.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # also `ctl`'s "the daemon refused"
EXIT_REJECTS = 1  # `mediate`: completed, some rows rejected
EXIT_USAGE = 2
EXIT_LEAKAGE = 3  # `assure`: leakage over [assurance] leakage_threshold
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE
EXIT_MEDIATE_FAILED = 70  # sysexits.h EX_SOFTWARE: `mediate` stopped part way
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE
