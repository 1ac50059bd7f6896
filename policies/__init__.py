"""Organisation 2FA policies: rules, per-member verdicts, reminders and escalations.

An edge that signs people in passes ``policies.gate.enrolment_required`` to the login flow (``twofa.logins``).
"""
