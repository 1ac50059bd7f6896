"""Organisation 2FA policies: rules, per-member verdicts, reminders and escalations.

Importing this package installs the policy verdict as the login flow's enrolment gate (``twofa.logins``), so any
edge that serves logins and knows policies enforces deadlines.
"""

from policies import gate as _gate

_gate.install()
